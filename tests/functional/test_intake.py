"""on_dataset_uploaded against a real Azurite: a JSONL upload becomes exactly one validated, split, recorded run."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import BlobClient, BlobServiceClient

from shared.context import AppContext
from shared.domain.errors import EngineError
from shared.domain.runs import RunState
from shared.settings import Settings
from tests.fakes import FakeEngine
from tests.registered import function

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
VALID = (SAMPLES / "ultrachat_sample.jsonl").read_bytes()
BROKEN = (SAMPLES / "ultrachat_broken.jsonl").read_bytes()

on_dataset_uploaded = function("on_dataset_uploaded")


def upload(settings: Settings, name: str, data: bytes) -> BlobClient:
    """Upload as a user would; return the client the SDK-type binding hands to the function."""
    service = BlobServiceClient.from_connection_string(settings.storage_connection_string.get_secret_value())
    client = service.get_blob_client(settings.datasets_container, name)
    client.upload_blob(data, overwrite=True)
    return client


def only_run(ctx: AppContext):
    runs = ctx.ledger.list()
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def read_blob(ctx: AppContext, path: str) -> bytes:
    container, _, name = path.partition("/")
    return ctx.store.read(container, name)[0]


def test_valid_upload_is_split_recorded_and_submitted_once(ctx: AppContext, engine: FakeEngine, settings: Settings):
    # given a valid ultrachat-shaped upload
    client = upload(settings, "ultrachat/train_sft.jsonl", VALID)
    etag_before = client.get_blob_properties().etag

    # when the blob trigger fires
    on_dataset_uploaded(client)

    # then one run was submitted, with the whole history recorded
    run = only_run(ctx)
    assert run.state == RunState.SUBMITTED
    assert [(t.from_state, t.to_state) for t in run.history] == [
        (None, RunState.RECEIVED),
        (RunState.RECEIVED, RunState.VALIDATING),
        (RunState.VALIDATING, RunState.SUBMITTED),
    ]
    assert run.job_name == run.run_id
    assert list(engine.jobs) == [run.run_id]
    spec = engine.specs[run.run_id]
    assert spec.data.train_blob == f"prepared/{run.run_id}/train.jsonl"
    assert spec.tags["ft-autopilot-run"] == run.run_id
    # and the prepared splits hold every valid row once, beside the upload
    train = read_blob(ctx, run.artifacts.train).splitlines()
    test = read_blob(ctx, run.artifacts.test).splitlines()
    assert len(train) == run.validation.train_rows and len(test) == run.validation.test_rows
    assert len(train) + len(test) == 240
    assert sorted(train + test) == sorted(VALID.splitlines())
    report = orjson.loads(read_blob(ctx, run.artifacts.report_json))
    assert report["valid"] is True and report["rows"] == 240 and report["sha256"] == run.dataset.sha256
    assert b"**valid**" in read_blob(ctx, run.artifacts.report_md)
    # and the upload itself is untouched
    assert client.get_blob_properties().etag == etag_before
    assert client.download_blob().readall() == VALID


def test_invalid_upload_is_rejected_with_its_report_and_returns_normally(
    ctx: AppContext, engine: FakeEngine, settings: Settings
):
    # given an upload with bad lines
    client = upload(settings, "broken.jsonl", BROKEN)

    # when the trigger fires, it returns normally (no poison loop)
    on_dataset_uploaded(client)

    # then the run is rejected, nothing was submitted, and the report names the lines
    run = only_run(ctx)
    assert run.state == RunState.REJECTED
    assert engine.submit_calls == 0
    assert run.artifacts.train is None and run.artifacts.test is None
    report = orjson.loads(read_blob(ctx, run.artifacts.report_json))
    assert report["valid"] is False
    assert (6, "invalid_json") in {(e["line"], e["code"]) for e in report["errors"]}
    assert run.validation.error_counts == report["error_counts"]
    assert client.download_blob().readall() == BROKEN


def test_five_deliveries_of_the_same_upload_make_one_run_and_one_submission(
    ctx: AppContext, engine: FakeEngine, settings: Settings
):
    # given one upload
    client = upload(settings, "train.jsonl", VALID)

    # when Event Grid delivers its BlobCreated five times
    for _ in range(5):
        on_dataset_uploaded(client)

    # then there is one run and one submission
    run = only_run(ctx)
    assert run.state == RunState.SUBMITTED
    assert engine.submit_calls == 1
    assert run.sources == [f"{settings.datasets_container}/train.jsonl"]
    assert len(run.history) == 3


def test_same_bytes_under_two_names_of_one_line_are_one_run(ctx: AppContext, engine: FakeEngine, settings: Settings):
    # given the same content uploaded twice under different names of one line
    first = upload(settings, "bot/a/train.jsonl", VALID)
    second = upload(settings, "bot/b/copy.jsonl", VALID)

    # when both uploads trigger
    on_dataset_uploaded(first)
    on_dataset_uploaded(second)

    # then both names point at one run, submitted once
    run = only_run(ctx)
    assert engine.submit_calls == 1
    container = settings.datasets_container
    assert run.sources == [f"{container}/bot/a/train.jsonl", f"{container}/bot/b/copy.jsonl"]
    assert run.line == "bot"


def test_concurrent_duplicate_deliveries_make_one_run_and_one_job(
    ctx: AppContext, engine: FakeEngine, settings: Settings
):
    # given one upload delivered five times at once
    client = upload(settings, "train.jsonl", VALID)
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            on_dataset_uploaded(client)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then one run, one job, and exactly one transition into each state
    assert errors == []
    run = only_run(ctx)
    assert run.state == RunState.SUBMITTED
    assert len(engine.jobs) == 1
    assert [t.to_state for t in run.history] == [RunState.RECEIVED, RunState.VALIDATING, RunState.SUBMITTED]


def test_transient_engine_error_is_raised_recorded_and_retried(ctx: AppContext, engine: FakeEngine, settings: Settings):
    # given an engine that throttles the first submission
    engine.fail_next_submits = 1
    client = upload(settings, "train.jsonl", VALID)

    # when the first delivery runs, the error reaches the platform so it retries
    with pytest.raises(EngineError):
        on_dataset_uploaded(client)

    # then the run shows the attempt and waits in validating
    run = only_run(ctx)
    assert run.state == RunState.VALIDATING
    assert [(a.stage, a.code) for a in run.attempts] == [("intake", "engine_error")]

    # when the platform redelivers
    on_dataset_uploaded(client)

    # then the run is submitted once, the attempt kept
    run = only_run(ctx)
    assert run.state == RunState.SUBMITTED
    assert len(engine.jobs) == 1 and engine.submit_calls == 2
    assert len(run.attempts) == 1


def test_without_an_engine_the_run_fails_clearly_and_nothing_pretends_to_train(ctx: AppContext, settings: Settings):
    # given the Azure ML engine chosen without a workspace to run in
    ctx.engine_factory = AppContext.from_settings(settings.model_copy(update={"engine": "azureml"})).engine_factory
    client = upload(settings, "train.jsonl", VALID)

    # when the trigger fires
    on_dataset_uploaded(client)

    # then the valid dataset is prepared, and the run failed with a stable code, not a crash or a fake job
    run = only_run(ctx)
    assert run.state == RunState.FAILED
    assert run.error.code == "engine_not_configured"
    assert "AUTOPILOT_ENGINE=azureml" in run.error.message
    assert run.job_name is None
    assert run.artifacts.train is not None


@pytest.mark.parametrize("name", ["prepared/ft-0123456789ab/train.jsonl", "notes.txt", "data.csv"])
def test_uploads_that_are_not_datasets_are_ignored(ctx: AppContext, engine: FakeEngine, settings: Settings, name: str):
    # given a blob that is our own output or not JSONL
    client = upload(settings, name, VALID)

    # when the trigger fires for it
    on_dataset_uploaded(client)

    # then no run exists
    assert ctx.ledger.list() == []
    assert engine.submit_calls == 0


def test_a_run_record_holds_no_secret(ctx: AppContext, settings: Settings):
    # given a processed upload
    on_dataset_uploaded(upload(settings, "train.jsonl", VALID))

    # then the stored record carries neither the account key nor a connection string
    run = only_run(ctx)
    stored = read_blob(ctx, f"{settings.runs_container}/records/{run.run_id}.json")
    secret = settings.storage_connection_string.get_secret_value()
    account_key = secret.split("AccountKey=")[1].split(";")[0]
    assert account_key.encode() not in stored
    assert b"AccountKey" not in stored and b"DefaultEndpointsProtocol" not in stored
