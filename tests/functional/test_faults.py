"""Faults a hostile operator finds: a damaged run record, a damaged receipt, a repeated request for a failed run,
storage that is down. Real Azurite, the fake engine (the records and storage are what is under test here)."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import orjson
import pytest

from shared.adapters.ledger import KEPT, RECORDS
from shared.cli.main import main as autopilot
from shared.context import AppContext
from shared.domain.errors import RecordUnreadable, StorageUnavailable
from shared.domain.jobs import JobStatus
from shared.domain.runs import RunState
from shared.domain.tags import MANAGED_TAG
from shared.settings import STORAGE_CONNECTION_SETTING, Settings, get_settings
from shared.usecases.repair import restore_record
from shared.usecases.sweep import sweep
from tests.fakes import FakeEngine
from tests.functional.test_intake import VALID, upload
from tests.functional.test_lifecycle import STATUS_CHANGED, event_for, submitted_run, trained_run
from tests.registered import function, http_request

get_run = function("get_run")
list_runs = function("list_runs")
create_run = function("create_run")
on_dataset_uploaded = function("on_dataset_uploaded")
on_job_event = function("on_job_event")

DAMAGED = b'{"run_id": "ft-0123456789ab", "state": "deplo'  # a record cut off mid-write


def damage(ctx: AppContext, run_id: str, data: bytes = DAMAGED) -> None:
    ctx.store.write(ctx.settings.runs_container, f"{RECORDS}{run_id}.json", data, content_type="application/json")


def body(response) -> dict:
    return orjson.loads(response.get_body())


def deployed_run(ctx: AppContext, engine: FakeEngine, name: str, data: bytes):
    run = trained_run(ctx, engine, name=name, data=data)
    on_job_event(event_for(run.run_id))
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED
    return record


def test_a_damaged_record_is_named_by_the_listing_and_answered_with_a_stable_code(ctx: AppContext, engine: FakeEngine):
    # given two runs, one of whose records is damaged
    good = submitted_run(ctx, "good.jsonl", VALID)
    bad = submitted_run(ctx, "bad.jsonl", VALID + VALID.splitlines(keepends=True)[0])
    damage(ctx, bad.run_id)

    # when the runs are listed, all of them and by state
    listing = body(list_runs(http_request("GET", "runs")))
    by_state = body(list_runs(http_request("GET", "runs", params={"state": "submitted"})))

    # then the good run is listed, and the damaged one is named with why, not raised
    assert [run["run_id"] for run in listing["runs"]] == [good.run_id]
    assert [run["run_id"] for run in by_state["runs"]] == [good.run_id]
    (unreadable,) = listing["unreadable"]
    assert unreadable["run_id"] == bad.run_id
    assert unreadable["blob"] == f"{ctx.settings.runs_container}/{RECORDS}{bad.run_id}.json"
    assert "does not parse" in unreadable["error"] and f"autopilot runs repair {bad.run_id}" in unreadable["error"]
    assert by_state["unreadable"] == listing["unreadable"]

    # and the damaged run itself answers 500 run_record_unreadable, the good one 200
    response = get_run(http_request("GET", f"runs/{bad.run_id}", route_params={"run_id": bad.run_id}))
    assert response.status_code == 500
    assert body(response)["error"]["code"] == "run_record_unreadable"
    assert get_run(http_request("GET", f"runs/{good.run_id}", route_params={"run_id": good.run_id})).status_code == 200


def test_the_sweep_goes_on_past_a_damaged_record_and_still_tears_down_an_idle_endpoint(
    ctx: AppContext, engine: FakeEngine
):
    # given a deployed run whose endpoint is idle, a run whose job failed without a word, and a running run whose
    # record is damaged
    deployed = deployed_run(ctx, engine, "served.jsonl", VALID)
    stuck = submitted_run(ctx, "stuck.jsonl", VALID + VALID.splitlines(keepends=True)[1])
    engine.finish_job(stuck.run_id, JobStatus.FAILED, error="node preempted")  # its event was lost
    damaged = submitted_run(ctx, "damaged.jsonl", VALID + VALID.splitlines(keepends=True)[2])
    damage(ctx, damaged.run_id)
    ctx.settings = ctx.settings.model_copy(update={"idle_minutes": 1, "idle_grace_minutes": 0})
    later = ctx.now() + timedelta(minutes=5)
    ctx.now = lambda: later

    # when the sweep runs
    outcome = sweep(ctx)

    # then the stuck run is reconciled, the idle endpoint torn down, and the damaged record named
    assert outcome.unreadable == [damaged.run_id]
    assert outcome.reconciled == [f"{stuck.run_id}: failed"]
    assert ctx.ledger.get(stuck.run_id).state == RunState.FAILED
    assert outcome.torn_down == [deployed.endpoint.name]
    assert ctx.ledger.get(deployed.run_id).state == RunState.TORN_DOWN


def test_repair_restores_the_last_version_written_whole_and_refuses_a_readable_record(ctx: AppContext):
    # given a run recorded through several states, then damaged
    run = submitted_run(ctx, "repaired.jsonl", VALID)
    last_good = ctx.ledger.get(run.run_id)
    damage(ctx, run.run_id)

    # when it is restored
    restored = restore_record(ctx, run.run_id)

    # then the record is the last good version again, and readable
    assert restored == last_good
    assert ctx.ledger.get(run.run_id) == last_good

    # and a readable record is never replaced
    with pytest.raises(Exception, match="nothing to repair") as refused:
        restore_record(ctx, run.run_id)
    assert getattr(refused.value, "code", None) == "record_readable"


def test_the_repair_command_shows_the_blob_and_restores_it(
    ctx: AppContext, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # given a damaged record, and the command pointed at the same storage
    run = submitted_run(ctx, "cli.jsonl", VALID)
    damage(ctx, run.run_id)
    assert settings.storage_connection_string is not None
    monkeypatch.setenv(STORAGE_CONNECTION_SETTING, settings.storage_connection_string.get_secret_value())
    monkeypatch.setenv("RUNS_CONTAINER", settings.runs_container)
    get_settings.cache_clear()
    try:
        # when it is shown, then restored
        shown = autopilot(["runs", "repair", run.run_id])
        shown_out = capsys.readouterr().out
        restored = autopilot(["runs", "repair", run.run_id, "--restore"])
        restored_out = capsys.readouterr().out
        again = autopilot(["runs", "repair", run.run_id])
    finally:
        get_settings.cache_clear()

    # then the first shows the stored bytes, why they fail and the kept copy, and exits 1; the restore exits 0
    assert shown == 1
    assert DAMAGED.decode() in shown_out and "damaged: run" in shown_out and "kept copy: state submitted" in shown_out
    assert f"autopilot runs repair {run.run_id} --restore" in shown_out
    assert restored == 0 and f"restored: run {run.run_id} is submitted again" in restored_out
    assert again == 0 and "nothing to repair" in capsys.readouterr().out


def test_a_damaged_record_without_a_kept_copy_is_reported_and_left_as_it_is(ctx: AppContext):
    # given a damaged record whose kept copy is gone too
    run = submitted_run(ctx, "nocopy.jsonl", VALID)
    damage(ctx, run.run_id)
    ctx.store.delete(ctx.settings.runs_container, f"{KEPT}{run.run_id}.json")

    # when a restore is asked for, then it is refused with a code, and the stored bytes are untouched
    with pytest.raises(Exception, match="no kept copy") as refused:
        restore_record(ctx, run.run_id)
    assert getattr(refused.value, "code", None) == "kept_copy_not_found"
    assert ctx.store.read(ctx.settings.runs_container, f"{RECORDS}{run.run_id}.json")[0] == DAMAGED
    with pytest.raises(RecordUnreadable):
        ctx.ledger.get(run.run_id)


def test_a_damaged_receipt_counts_as_none_and_the_redelivery_still_makes_one_run(ctx: AppContext, engine: FakeEngine):
    # given an upload taken in, whose receipt is then damaged
    blob = upload(ctx.settings, "receipt.jsonl", VALID)
    on_dataset_uploaded(blob)
    for name in ctx.store.list_names(ctx.settings.runs_container, "receipts/"):
        ctx.store.write(ctx.settings.runs_container, name, b"{not json")

    # when the upload is delivered again
    on_dataset_uploaded(blob)

    # then there is still one run and one job
    assert len(ctx.ledger.list()) == 1
    assert engine.submit_calls == 1


def test_asking_again_for_content_whose_run_failed_answers_409_with_the_run_and_the_way_to_force(
    ctx: AppContext, engine: FakeEngine
):
    # given content whose run failed (its worker was lost)
    upload(ctx.settings, "again.jsonl", VALID)
    first = create_run(http_request("POST", "runs", body=orjson.dumps({"dataset": "again.jsonl"})))
    run_id = body(first)["run_id"]
    engine.finish_job(run_id, JobStatus.FAILED, error="worker_lost: the training worker died")
    on_job_event(event_for(run_id, STATUS_CHANGED, runStatus="Failed"))
    assert ctx.ledger.get(run_id).state == RunState.FAILED

    # when the same run is asked for again, then with force
    again = create_run(http_request("POST", "runs", body=orjson.dumps({"dataset": "again.jsonl"})))
    forced = create_run(http_request("POST", "runs", body=orjson.dumps({"dataset": "again.jsonl", "force": True})))

    # then the repeat is 409 run_exists, with the failed run and the hint; force starts a new run (202)
    assert first.status_code == 202
    assert again.status_code == 409
    answer = body(again)
    assert answer["error"]["code"] == "run_exists"
    assert '"force": true' in answer["error"]["message"] and "ended failed" in answer["error"]["message"]
    assert answer["run"]["run_id"] == run_id and answer["run"]["state"] == "failed"
    assert forced.status_code == 202 and body(forced)["run_id"] != run_id


def test_a_repeat_for_a_run_in_progress_still_answers_202(ctx: AppContext, engine: FakeEngine):
    upload(ctx.settings, "inprogress.jsonl", VALID)
    first = create_run(http_request("POST", "runs", body=orjson.dumps({"dataset": "inprogress.jsonl"})))
    again = create_run(http_request("POST", "runs", body=orjson.dumps({"dataset": "inprogress.jsonl"})))
    assert (first.status_code, again.status_code) == (202, 202)
    assert body(again)["run_id"] == body(first)["run_id"] and body(again)["state"] == "submitted"


def test_with_storage_down_the_api_answers_503_within_its_retry_budget(settings: Settings, engine: FakeEngine):
    # given storage that refuses connections (a loopback port nobody listens on), and the default retry settings
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = settings.model_copy(
        update={
            "storage_connection_string": type(settings.storage_connection_string)(
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
            )
        }
    )
    ctx = AppContext.from_settings(down, engine_factory=lambda: engine)

    # when the runs are listed
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        ctx.ledger.listing()
    seconds = time.monotonic() - started

    # then it gives up as unavailable (503) within STORAGE_RETRY_BUDGET_S plus one connection attempt, not 17 s
    assert StorageUnavailable.http_status == 503
    assert seconds < down.storage_retry_budget_s + 1, seconds


def test_a_damaged_record_blocks_only_its_own_run(ctx: AppContext, engine: FakeEngine):
    # given a damaged record, and a managed endpoint of another run
    damage(ctx, "ft-0123456789ab")
    engine.create_or_update_endpoint("ep-other", {MANAGED_TAG: "true"})

    # when another upload arrives, then it becomes its run as usual
    run = submitted_run(ctx, "other.jsonl", VALID)
    assert ctx.ledger.get(run.run_id).state == RunState.SUBMITTED


def test_a_deployment_that_cannot_start_is_rolled_back_with_its_log_and_the_traffic_stays(
    ctx: AppContext, engine: FakeEngine
):
    # given a line's champion serving all the traffic, and a new run whose deployment cannot start
    champion = deployed_run(ctx, engine, "champion.jsonl", VALID)
    run = trained_run(ctx, engine, name="refused.jsonl", data=VALID + VALID.splitlines(keepends=True)[3])
    engine.refuse_next_deployments = 1

    # when its completion is delivered
    on_job_event(event_for(run.run_id))

    # then the run ends rolled_back (not failed), with the engine's reason and the end of the deployment's log
    refused = ctx.ledger.get(run.run_id)
    assert refused.state == RunState.ROLLED_BACK
    assert refused.error.code == "deployment_failed"
    assert refused.error.message.startswith(f"deployment {refused.endpoint.deployment} is refused to start")
    assert "container exited with code 137" in refused.error.message
    # and the traffic is where it was
    assert engine.traffic(champion.endpoint.name) == {champion.endpoint.deployment: 100}
    assert ctx.ledger.get(champion.run_id).state == RunState.DEPLOYED
