"""Model lines through the registered functions, with real Azurite and the fake engine (whose job outcomes the
tests choose): line names and configs, isolation, accumulation under concurrency, and retries of failed jobs."""

from __future__ import annotations

import json
import threading
import time

import orjson
import pytest

from shared.cli.main import main as autopilot
from shared.context import AppContext
from shared.domain.jobs import JobStatus
from shared.domain.runs import RunRecord, RunState
from shared.settings import STORAGE_CONNECTION_SETTING, get_settings
from tests.fakes import FakeEngine
from tests.functional.test_intake import VALID, upload
from tests.functional.test_lifecycle import STATUS_CHANGED, event_for
from tests.registered import function, http_request

on_dataset_uploaded = function("on_dataset_uploaded")
on_job_event = function("on_job_event")
list_lines = function("list_lines")
get_line = function("get_line")
list_runs = function("list_runs")
LINES = VALID.splitlines(keepends=True)


def run_of(ctx: AppContext, name: str) -> RunRecord:
    (run,) = [r for r in ctx.ledger.list(limit=1000) if f"{ctx.settings.datasets_container}/{name}" in r.sources]
    return run


def put_config(ctx: AppContext, line: str, config: dict) -> None:
    upload(ctx.settings, f"{line}/line.json", json.dumps(config).encode())


def take_in(ctx: AppContext, name: str, data: bytes) -> RunRecord:
    on_dataset_uploaded(upload(ctx.settings, name, data))
    return run_of(ctx, name)


def fail(engine: FakeEngine, run: RunRecord, *, transient: bool, error: str) -> None:
    assert run.job_name is not None
    engine.finish_job(run.job_name, JobStatus.FAILED, error=error, transient=transient)
    on_job_event(event_for(run.run_id, STATUS_CHANGED, runStatus="Failed", runId=run.job_name))


def test_the_same_bytes_in_two_lines_are_two_runs_with_their_own_models_and_endpoints(
    ctx: AppContext, engine: FakeEngine
):
    # given two lines, one with its own parameters
    put_config(ctx, "legal", {"parameters": {"learning_rate": 0.001}, "gate": {"champion_tolerance": 0.1}})

    # when the same bytes are uploaded to both, at the same time
    threads = [
        threading.Thread(target=on_dataset_uploaded, args=(upload(ctx.settings, f"{line}/data.jsonl", VALID),))
        for line in ("support", "legal")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then there are two runs, each with its line's effective config, and each deploys to its own endpoint
    support, legal = run_of(ctx, "support/data.jsonl"), run_of(ctx, "legal/data.jsonl")
    assert support.run_id != legal.run_id
    assert (support.line, legal.line) == ("support", "legal")
    assert legal.parameters.learning_rate == 0.001 and support.parameters.learning_rate != 0.001
    assert legal.line_config.gate_champion_tolerance == 0.1 and support.line_config.gate_champion_tolerance == 0.05
    assert legal.line_config_sha256 == legal.line_config.sha256 != support.line_config_sha256
    for run in (support, legal):
        engine.finish_job(run.run_id)
        on_job_event(event_for(run.run_id))
    support, legal = ctx.ledger.get(support.run_id), ctx.ledger.get(legal.run_id)
    assert (support.state, legal.state) == (RunState.DEPLOYED, RunState.DEPLOYED)
    assert (support.model.name, legal.model.name) == ("support-ft-chat", "legal-ft-chat")
    assert support.endpoint.name == "ep-support-ft-chat" and legal.endpoint.name == "ep-legal-ft-chat"
    assert engine.traffic("ep-legal-ft-chat") == {legal.endpoint.deployment: 100}

    # and the API shows each line with its champion and endpoint
    lines = {line["line"]: line for line in orjson.loads(list_lines(http_request("GET", "lines")).get_body())["lines"]}
    assert set(lines) == {"support", "legal"}
    assert lines["legal"]["champion"] == {"name": "legal-ft-chat", "version": "1"}
    assert lines["legal"]["endpoint_state"] == "serving" and lines["legal"]["runs_by_state"] == {"deployed": 1}
    one = orjson.loads(get_line(http_request("GET", "lines/legal", route_params={"line": "legal"})).get_body())
    assert one["last_run"] == legal.run_id and one["config"]["parameters"]["learning_rate"] == 0.001
    by_line = orjson.loads(list_runs(http_request("GET", "runs", params={"line": "support"})).get_body())
    assert [run["run_id"] for run in by_line["runs"]] == [support.run_id]


def test_a_retrain_of_one_line_touches_nothing_of_the_other(ctx: AppContext, engine: FakeEngine):
    # given two deployed lines
    runs = {}
    for line in ("alpha", "beta"):
        run = take_in(ctx, f"{line}/v1.jsonl", VALID)
        engine.finish_job(run.run_id)
        on_job_event(event_for(run.run_id))
        runs[line] = ctx.ledger.get(run.run_id)
    beta_endpoint = engine.endpoints[runs["beta"].endpoint.name]

    # when alpha retrains on new content and is promoted
    retrain = take_in(ctx, "alpha/v2.jsonl", b"".join(LINES[1:]))
    engine.finish_job(retrain.run_id, eval_loss=0.7)
    on_job_event(event_for(retrain.run_id))

    # then alpha's endpoint serves the retrain, alpha's first run is superseded, and beta is as it was
    assert ctx.ledger.get(retrain.run_id).state == RunState.DEPLOYED
    assert ctx.ledger.get(runs["alpha"].run_id).state == RunState.SUPERSEDED
    assert engine.endpoints[runs["beta"].endpoint.name] == beta_endpoint
    assert ctx.ledger.get(runs["beta"].run_id) == runs["beta"]


def test_an_unusable_line_config_or_name_rejects_the_upload_with_its_code(ctx: AppContext, engine: FakeEngine):
    # given a line.json with an unknown key, and one with a value out of range
    put_config(ctx, "typo", {"acumulate": True})
    put_config(ctx, "range", {"max_job_retries": 99})

    # when datasets are uploaded to them, and to a folder that is no line name
    typo, out_of_range = take_in(ctx, "typo/a.jsonl", VALID), take_in(ctx, "range/a.jsonl", VALID)
    misnamed = take_in(ctx, "Bad_Line/a.jsonl", VALID)

    # then each is recorded rejected, naming the key, and nothing is submitted
    assert (typo.state, typo.error.code) == (RunState.REJECTED, "invalid_line_config")
    assert typo.error.message.startswith("typo/line.json: acumulate: Extra inputs are not permitted")
    assert out_of_range.error.message.startswith("range/line.json: max_job_retries: ")
    assert (misnamed.state, misnamed.error.code, misnamed.line) == (RunState.REJECTED, "invalid_line_name", "Bad_Line")
    spaced = take_in(ctx, "two words/a.jsonl", VALID)  # not even a plain name: recorded under a placeholder
    assert (spaced.state, spaced.error.code, spaced.line) == (RunState.REJECTED, "invalid_line_name", "_unnamed")
    assert "'two words'" in spaced.error.message
    assert engine.submit_calls == 0
    assert typo.artifacts.report_json is not None and typo.artifacts.train is None


def test_two_uploads_to_an_accumulating_line_at_once_make_two_runs_with_recorded_training_sets(
    ctx: AppContext, engine: FakeEngine
):
    # given an accumulating line with one upload taken in
    put_config(ctx, "acc", {"accumulate": True})
    first = take_in(ctx, "acc/first.jsonl", b"".join(LINES[:100]))

    # when two more arrive at the same time
    blobs = [upload(ctx.settings, "acc/second.jsonl", b"".join(LINES[100:170]))]
    blobs.append(upload(ctx.settings, "acc/third.jsonl", b"".join(LINES[170:])))
    threads = [threading.Thread(target=on_dataset_uploaded, args=(blob,)) for blob in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then each is its own run, trained on the first upload, itself, and the other only if it was recorded first
    container = ctx.settings.datasets_container
    assert [u.blob for u in first.uploads] == [f"{container}/acc/first.jsonl"]
    for name, other in (("acc/second.jsonl", "acc/third.jsonl"), ("acc/third.jsonl", "acc/second.jsonl")):
        run = run_of(ctx, name)
        used = [u.blob for u in run.uploads]
        assert used[0] == f"{container}/acc/first.jsonl" and f"{container}/{name}" in used
        assert set(used) <= {f"{container}/acc/first.jsonl", f"{container}/{name}", f"{container}/{other}"}
        assert run.validation.rows == sum(u.rows for u in run.uploads)
        assert run.state == RunState.SUBMITTED
    assert engine.submit_calls == 3


def test_a_transient_job_failure_is_resubmitted_up_to_the_lines_limit(ctx: AppContext, engine: FakeEngine):
    # given a line that allows one retry
    put_config(ctx, "flaky", {"max_job_retries": 1})
    run = take_in(ctx, "flaky/a.jsonl", VALID)

    # when its job fails for a transient cause, and the event is delivered twice
    fail(engine, run, transient=True, error="worker_lost: the training process exited without reporting a result")
    on_job_event(event_for(run.run_id, STATUS_CHANGED, runStatus="Failed", runId=run.run_id))

    # then the run is submitted again, once, with the cause recorded
    retried = ctx.ledger.get(run.run_id)
    assert retried.state == RunState.SUBMITTED and retried.job_name == f"{run.run_id}-r1"
    assert [(r.job_name, r.cause) for r in retried.job_retries] == [
        (run.run_id, "worker_lost: the training process exited without reporting a result")
    ]
    assert engine.submit_calls == 2 and engine.specs[f"{run.run_id}-r1"].tags["ft-autopilot-run"] == run.run_id

    # when the second job fails the same way, then the limit is reached and the run fails with the cause
    fail(engine, retried, transient=True, error="worker_lost: again")
    failed = ctx.ledger.get(run.run_id)
    assert failed.state == RunState.FAILED and engine.submit_calls == 2
    assert failed.error.message == "worker_lost: again (after 1 retries, the line's max_job_retries)"


def test_a_users_error_fails_the_run_at_once(ctx: AppContext, engine: FakeEngine):
    run = take_in(ctx, "plain/a.jsonl", VALID)
    fail(engine, run, transient=False, error="training_failed: CUDA out of memory")
    failed = ctx.ledger.get(run.run_id)
    assert failed.state == RunState.FAILED and failed.job_retries == []
    assert failed.error.message == "training_failed: CUDA out of memory" and engine.submit_calls == 1


def test_a_completed_retry_carries_the_run_on(ctx: AppContext, engine: FakeEngine):
    run = take_in(ctx, "comeback/a.jsonl", VALID)
    fail(engine, run, transient=True, error="worker_lost: killed")
    attempt = f"{run.run_id}-r1"
    engine.finish_job(attempt)
    on_job_event(event_for(run.run_id, runId=attempt))
    done = ctx.ledger.get(run.run_id)
    assert done.state == RunState.DEPLOYED and done.job_name == attempt and len(done.job_retries) == 1


def test_a_late_redelivery_to_an_accumulating_line_is_the_same_run(ctx: AppContext, engine: FakeEngine):
    # given an accumulating line with two uploads taken in, one after the other
    put_config(ctx, "late", {"accumulate": True})
    first_blob = upload(ctx.settings, "late/first.jsonl", b"".join(LINES[:120]))
    on_dataset_uploaded(first_blob)
    time.sleep(1.1)  # blob times have a resolution of one second
    take_in(ctx, "late/second.jsonl", b"".join(LINES[120:]))
    runs_before = {r.run_id for r in ctx.ledger.list(line="late")}

    # when the first upload is delivered again, its receipt lost
    for name in ctx.store.list_names(ctx.settings.runs_container, "receipts/"):
        ctx.store.delete(ctx.settings.runs_container, name)
    on_dataset_uploaded(first_blob)

    # then it is still its one run, trained on itself alone, and nothing new was submitted
    assert {r.run_id for r in ctx.ledger.list(line="late")} == runs_before
    assert [u.blob for u in run_of(ctx, "late/first.jsonl").uploads] == [
        f"{ctx.settings.datasets_container}/late/first.jsonl"
    ]
    assert engine.submit_calls == 2


def test_the_lines_command_prints_each_line(
    ctx: AppContext, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # given a line with a run, and the command pointed at the same storage (its engine is the local one: no models)
    put_config(ctx, "cli", {"max_job_retries": 1})
    run = take_in(ctx, "cli/a.jsonl", VALID)
    assert ctx.settings.storage_connection_string is not None
    monkeypatch.setenv(STORAGE_CONNECTION_SETTING, ctx.settings.storage_connection_string.get_secret_value())
    for name, value in (
        ("RUNS_CONTAINER", ctx.settings.runs_container),
        ("DATASETS_CONTAINER", ctx.settings.datasets_container),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOCAL_STATE_DIR", str(ctx.settings.local_state_dir))
    get_settings.cache_clear()
    try:
        # when it lists the lines, then one line as JSON, then a bad name
        listed = autopilot(["lines"])
        text = capsys.readouterr().out
        as_json = autopilot(["lines", "cli", "--json"])
        (view,) = json.loads(capsys.readouterr().out)
        bad = autopilot(["lines", "No_Such"])
    finally:
        get_settings.cache_clear()

    # then the line, its endpoint, last run and config are shown; a bad name is bad usage
    assert listed == 0 and "cli: champion none; endpoint ep-cli-ft-chat (none)" in text
    assert f"last run: {run.run_id} (submitted); runs: submitted 1" in text and "max job retries 1" in text
    assert as_json == 0 and view["line"] == "cli" and view["config"]["max_job_retries"] == 1
    assert bad == 2 and "invalid_line_name" in capsys.readouterr().err
