"""What a run's job took and how long an endpoint was live or torn down, from the runs' history
(shared/usecases/costs.py), and the tokens a row that the estimate uses, from the validation report.

Records are built with new_run and moved with the state machine's own advance; times are fixed, in UTC.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.domain.chatdata import validate_chunks
from shared.domain.finetune import FineTuneParameters
from shared.domain.runs import DatasetRef, RunRecord, RunState, advance, advance_from, new_run
from shared.usecases.costs import job_seconds, live_periods, tokens_per_row
from tests.unit.chatdata_builders import conversation, jsonl, line

SAMPLE = Path(__file__).parents[2] / "samples" / "ultrachat_sample.jsonl"
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
S = RunState


def received(run_id: str = "ft-0123456789ab", at: datetime = T0) -> RunRecord:
    dataset = DatasetRef(container="datasets", blob=f"{run_id}.jsonl", sha256="0f" * 32, size_bytes=1)
    return new_run(
        run_id=run_id, dataset=dataset, parameters=FineTuneParameters(), base_model="tiny", engine="local", now=at
    )


def moved(record: RunRecord, *steps: tuple[RunState, datetime]) -> RunRecord:
    """The record advanced through each (state, time) in turn, as the state machine allows."""
    for state, at in steps:
        record = advance(record, state, f"to {state}", at)
    return record


def submitted(at: datetime = T0, run_id: str = "ft-0123456789ab") -> RunRecord:
    """A run validated and submitted at `at` (received and validating a minute before)."""
    record = received(run_id, at - timedelta(minutes=1))
    return moved(record, (S.VALIDATING, at - timedelta(minutes=1)), (S.SUBMITTED, at))


def deployed(at: datetime, run_id: str = "ft-0123456789ab") -> RunRecord:
    """A run trained, registered and deployed at `at` (its job ran in the hour before)."""
    record = submitted(at - timedelta(hours=1), run_id)
    return moved(
        record,
        (S.RUNNING, at - timedelta(minutes=50)),
        (S.TRAINED, at - timedelta(minutes=20)),
        (S.REGISTERED, at - timedelta(minutes=10)),
        (S.DEPLOYING, at - timedelta(minutes=5)),
        (S.DEPLOYED, at),
    )


def hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


# -- job_seconds ---------------------------------------------------------------------------------------------------


def test_a_job_runs_from_running_to_trained():
    # given a run submitted at t0, running a minute later and trained ten minutes after that
    record = moved(submitted(T0), (S.RUNNING, T0 + timedelta(seconds=60)), (S.TRAINED, T0 + timedelta(seconds=660)))

    # when its job's duration is worked out
    # then it is the 600 seconds from running to trained (the queue before running is not counted)
    assert job_seconds(record) == 600.0


def test_a_job_that_skipped_running_runs_from_submitted():
    # given a run whose job went from submitted straight to trained (job events may skip Running)
    record = moved(submitted(T0), (S.TRAINED, T0 + timedelta(seconds=450)))

    # then its job ran from submission
    assert job_seconds(record) == 450.0


@pytest.mark.parametrize("end", [S.FAILED, S.CANCELED])
def test_a_failed_or_canceled_job_has_ended_too(end):
    # given a job that ran 90 seconds and then failed or was canceled
    record = moved(submitted(T0), (S.RUNNING, T0 + timedelta(seconds=30)), (end, T0 + timedelta(seconds=120)))

    # then its duration is known
    assert job_seconds(record) == 90.0


@pytest.mark.parametrize(
    "record",
    [
        received(),
        submitted(T0),
        moved(submitted(T0), (S.RUNNING, T0 + timedelta(seconds=60))),
    ],
    ids=["received", "submitted", "running"],
)
def test_a_job_not_ended_yet_has_no_duration(record):
    # given a run whose job has not ended (or not started)
    # then its duration is unknown
    assert job_seconds(record) is None


def test_a_job_retried_runs_from_its_first_start():
    # given a run whose first job ran from t0+60s, failed transiently and was submitted again, then trained
    record = moved(
        submitted(T0),
        (S.RUNNING, T0 + timedelta(seconds=60)),
        (S.SUBMITTED, T0 + timedelta(seconds=300)),
        (S.RUNNING, T0 + timedelta(seconds=360)),
        (S.TRAINED, T0 + timedelta(seconds=960)),
    )

    # then the job counts from the first running to trained
    assert job_seconds(record) == 900.0


def test_advance_from_moves_only_a_run_still_in_the_expected_state():
    # given a run submitted at t0, and the change a job event "running" makes
    record = submitted(T0)
    to_running = advance_from(S.SUBMITTED, S.RUNNING, "job running", T0 + timedelta(seconds=60))

    # when it is applied, and applied again to the moved run
    running = to_running(record)
    assert running is not None
    again = to_running(running)

    # then the first moved it, the second changes nothing, and the job's start is the running time
    assert running.state == S.RUNNING
    assert again is None
    trained = advance_from(S.RUNNING, S.TRAINED, "job completed", T0 + timedelta(seconds=660))(running)
    assert trained is not None and job_seconds(trained) == 600.0


# -- live_periods --------------------------------------------------------------------------------------------------


def test_an_endpoint_restored_is_live_since_the_restore():
    # given a run deployed at t1, torn down at t2, restored (deploying, deployed) at t3, and now t4
    t1 = T0 + timedelta(hours=2)
    t2 = t1 + timedelta(hours=5)
    t3 = t2 + timedelta(hours=10, minutes=30)
    t4 = t3 + timedelta(hours=3, minutes=15)
    record = moved(deployed(t1), (S.TORN_DOWN, t2), (S.DEPLOYING, t3 - timedelta(minutes=6)), (S.DEPLOYED, t3))

    # when its live periods are worked out
    last_live, hours_live, hours_down = live_periods([record], t4)

    # then it has been live since the restore, and was torn down from t2 until then
    assert last_live == t3
    assert hours_live == 3.25 == hours(t4 - t3)
    assert hours_down == 10.5 == hours(t3 - t2)


def test_an_endpoint_still_torn_down_is_not_live():
    # given a run deployed at t1 and torn down at t2, still down now
    t1 = T0 + timedelta(hours=2)
    t2 = t1 + timedelta(hours=4)
    now = t2 + timedelta(hours=6)
    record = moved(deployed(t1), (S.TORN_DOWN, t2))

    # when its live periods are worked out
    last_live, hours_live, hours_down = live_periods([record], now)

    # then it is not live, and has been down since t2
    assert last_live is None
    assert hours_live == 0.0
    assert hours_down == 6.0 == hours(now - t2)


def test_an_endpoint_deployed_and_never_torn_down_is_live_since_its_deployment():
    # given a run deployed at t1, and now 1.5 hours later
    t1 = T0 + timedelta(hours=2)
    record = deployed(t1)

    # then it is live since t1 and was never down
    assert live_periods([record], t1 + timedelta(hours=1, minutes=30)) == (t1, 1.5, 0.0)


def test_an_endpoint_of_two_runs_is_live_since_the_newer_deployment():
    # given an older run deployed at t1 and superseded at t2, when a newer run on the same endpoint was deployed
    t1 = T0 + timedelta(hours=2)
    t2 = t1 + timedelta(hours=8)
    now = t2 + timedelta(hours=2)
    older = moved(deployed(t1, "ft-000000000001"), (S.SUPERSEDED, t2))
    newer = deployed(t2, "ft-000000000002")

    # when the endpoint's live periods are worked out, the runs in either order
    forwards = live_periods([older, newer], now)
    backwards = live_periods([newer, older], now)

    # then it is live since the newer deployment, and was never down
    assert forwards == (t2, 2.0, 0.0)
    assert backwards == forwards


def test_two_teardowns_add_up():
    # given a run torn down twice: for 2 hours, restored, then for 3 hours until now
    t1 = T0 + timedelta(hours=2)
    record = moved(
        deployed(t1),
        (S.TORN_DOWN, t1 + timedelta(hours=1)),
        (S.DEPLOYING, t1 + timedelta(hours=3) - timedelta(minutes=5)),
        (S.DEPLOYED, t1 + timedelta(hours=3)),
        (S.TORN_DOWN, t1 + timedelta(hours=4)),
    )
    now = t1 + timedelta(hours=7)

    # then it is not live now, and was down 2 + 3 hours
    assert live_periods([record], now) == (None, 0.0, 5.0)


def test_an_endpoint_without_runs_has_no_periods():
    assert live_periods([], T0) == (None, 0.0, 0.0)


# -- tokens_per_row ------------------------------------------------------------------------------------------------


def test_tokens_per_row_is_the_mean_estimated_tokens_of_a_valid_example():
    # given two valid rows: 4 + 8 = 12 characters (3 tokens) and 8 + 8 = 16 characters (4 tokens), plus the
    # chat template's 4 tokens for each of their 2 messages: 11 and 12 tokens
    data = jsonl([line(conversation("abcd", "efghijkl")), line(conversation("abcdefgh", "ijklmnop"))])

    # when they are validated and the tokens a row are read from the report
    report = validate_chunks([data])

    # then they are the mean, as the report's statistics give it
    assert report.stats["examples"]["estimated_tokens"]["mean"] == 11.5
    assert tokens_per_row(report) == 11.5


def test_tokens_per_row_leaves_out_invalid_rows():
    # given one valid row of 11 tokens (as above) and one that is not JSON
    data = jsonl([line(conversation("abcd", "efghijkl")), b"{not json"])

    # then only the valid row counts
    assert tokens_per_row(validate_chunks([data])) == 11.0


def test_tokens_per_row_of_the_sample_is_the_mean_by_hand():
    # given the first ten rows of the packaged sample, and their tokens worked out by hand: a token for each 4
    # characters of content (rounded up), and 4 for each message
    rows = SAMPLE.read_bytes().splitlines()[:10]
    contents = [[m["content"] for m in json.loads(row)["messages"]] for row in rows]
    by_hand = [math.ceil(sum(map(len, texts)) / 4) + 4 * len(texts) for texts in contents]

    # when they are validated
    report = validate_chunks([jsonl(rows)])

    # then all ten are examples, and the tokens a row are their mean, as the report rounds it
    assert report.rows == 10 and report.error_counts == {}
    assert tokens_per_row(report) == round(sum(by_hand) / 10, 2)


@pytest.mark.parametrize("data", [b"", b"{not json\n", b'{"messages": []}\n'], ids=["empty", "not-json", "no-turns"])
def test_tokens_per_row_without_valid_examples_is_zero(data):
    # given a report with no valid example
    report = validate_chunks([data])
    assert report.stats["examples"]["estimated_tokens"] is None

    # then the tokens a row are 0.0
    assert tokens_per_row(report) == 0.0
