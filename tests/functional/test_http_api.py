"""HTTP functions called as the host calls them, with a real Azurite behind get_run and list_runs."""

from __future__ import annotations

import orjson
import pytest

from shared.context import AppContext
from shared.settings import get_settings
from tests.functional.test_intake import BROKEN, VALID, upload
from tests.registered import function, http_request

validate_dataset = function("validate_dataset")
get_run = function("get_run")
list_runs = function("list_runs")


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch):
    """Handlers read get_settings(); give each test its own environment."""
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def body(response) -> dict:
    return orjson.loads(response.get_body())


def test_validate_returns_200_and_the_report_for_a_valid_dataset():
    response = validate_dataset(http_request("POST", "validate", body=VALID))

    assert response.status_code == 200
    report = body(response)
    assert report["valid"] is True
    assert report["rows"] == 240
    assert report["split"]["train"] + report["split"]["test"] == 240
    assert set(report) >= {"valid", "rows", "sha256", "error_counts", "errors", "warnings", "stats", "split"}


def test_validate_returns_422_with_line_numbers_for_an_invalid_dataset():
    response = validate_dataset(http_request("POST", "validate", body=BROKEN))

    assert response.status_code == 422
    report = body(response)
    assert report["valid"] is False
    assert {(e["line"], e["code"]) for e in report["errors"]} >= {(6, "invalid_json"), (7, "missing_messages")}


def test_validate_honours_test_fraction_and_rejects_a_bad_one():
    all_train = validate_dataset(http_request("POST", "validate", body=VALID, params={"test_fraction": "0"}))
    assert body(all_train)["split"] == {"train": 240, "test": 0}

    bad = validate_dataset(http_request("POST", "validate", body=VALID, params={"test_fraction": "abc"}))
    assert bad.status_code == 400
    assert body(bad)["error"]["code"] == "invalid_input"

    out_of_range = validate_dataset(http_request("POST", "validate", body=VALID, params={"test_fraction": "1.5"}))
    assert out_of_range.status_code == 400


def test_validate_rejects_a_body_over_the_limit_with_413(fresh_settings: pytest.MonkeyPatch):
    fresh_settings.setenv("MAX_REQUEST_BYTES", "1000")

    response = validate_dataset(http_request("POST", "validate", body=VALID))

    assert response.status_code == 413
    assert body(response) == {
        "error": {"code": "payload_too_large", "message": f"body is {len(VALID)} bytes; the limit is 1000"}
    }


def test_validate_answers_arbitrary_bytes_with_a_report_not_a_500():
    response = validate_dataset(http_request("POST", "validate", body=bytes(range(256)) * 40))

    assert response.status_code == 422
    assert body(response)["valid"] is False


def test_get_run_returns_the_record_and_404_or_400_otherwise(ctx: AppContext):
    # given a run made by an upload
    function("on_dataset_uploaded")(upload(ctx.settings, "train.jsonl", VALID))
    run_id = ctx.ledger.list()[0].run_id

    # when / then
    found = get_run(http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id}))
    assert found.status_code == 200
    record = body(found)
    assert record["run_id"] == run_id and record["state"] == "submitted"
    assert [step["to"] for step in record["history"]] == ["received", "validating", "submitted"]
    assert record["artifacts"]["report_md"].endswith(f"prepared/{run_id}/report.md")

    missing = get_run(http_request("GET", "runs/ft-000000000000", route_params={"run_id": "ft-000000000000"}))
    assert missing.status_code == 404
    assert body(missing)["error"]["code"] == "run_not_found"

    malformed = get_run(http_request("GET", "runs/..%2Fsecrets", route_params={"run_id": "../secrets"}))
    assert malformed.status_code == 400
    assert body(malformed)["error"]["code"] == "invalid_input"


def test_list_runs_filters_by_state_and_validates_its_query(ctx: AppContext):
    # given one submitted and one rejected run
    function("on_dataset_uploaded")(upload(ctx.settings, "good.jsonl", VALID))
    function("on_dataset_uploaded")(upload(ctx.settings, "bad.jsonl", BROKEN))

    every = body(list_runs(http_request("GET", "runs")))["runs"]
    rejected = body(list_runs(http_request("GET", "runs", params={"state": "rejected"})))["runs"]

    assert sorted(r["state"] for r in every) == ["rejected", "submitted"]
    assert [r["dataset"]["blob"] for r in rejected] == ["bad.jsonl"]
    assert list_runs(http_request("GET", "runs", params={"state": "bogus"})).status_code == 400
    assert list_runs(http_request("GET", "runs", params={"limit": "many"})).status_code == 400
    assert list_runs(http_request("GET", "runs", params={"limit": "0"})).status_code == 400


def test_storage_outage_is_a_503_with_the_error_shape(ctx: AppContext):
    # given a context whose storage cannot be reached (a closed loopback port)
    from shared.adapters.azurite import ACCOUNT, ACCOUNT_KEY, free_port
    from shared.context import install_context
    from shared.settings import Settings

    unreachable = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{free_port()}/{ACCOUNT};"
    )
    install_context(AppContext.from_settings(Settings(storage_connection_string=unreachable, storage_retries=0)))

    response = list_runs(http_request("GET", "runs"))

    assert response.status_code == 503
    assert body(response)["error"]["code"] == "storage_unavailable"


create_run = function("create_run")
cancel_run = function("cancel_run")
list_endpoints = function("list_endpoints")
restore_endpoint = function("restore_endpoint")


@pytest.mark.parametrize(
    ("handler", "route", "body", "route_params", "status", "code"),
    [
        ("create_run", "runs", b"not json", {}, 400, "invalid_input"),
        ("create_run", "runs", b"{}", {}, 400, "invalid_input"),  # no dataset
        ("create_run", "runs", b'{"dataset": "../secrets.jsonl"}', {}, 400, "invalid_input"),
        ("create_run", "runs", b'{"dataset": "/etc/passwd.jsonl"}', {}, 400, "invalid_input"),
        ("create_run", "runs", b'{"dataset": "a\\\\b.jsonl"}', {}, 400, "invalid_input"),
        ("create_run", "runs", b'{"dataset": "data.csv"}', {}, 400, "invalid_input"),
        ("create_run", "runs", b'{"dataset": "prepared/x/train.jsonl"}', {}, 400, "invalid_input"),
        ("create_run", "runs", b'{"dataset": "a.jsonl", "colour": "red"}', {}, 400, "invalid_input"),
        ("create_run", "runs", b'{"dataset": "a.jsonl", "parameters": {"epochs": 3}}', {}, 400, "invalid_input"),
        (
            "create_run",
            "runs",
            b'{"dataset": "a.jsonl", "parameters": {"learning_rate": "fast"}}',
            {},
            400,
            "invalid_input",
        ),
        ("create_run", "runs", b'{"dataset": "a.jsonl", "force": "yes please"}', {}, 400, "invalid_input"),
        ("create_run", "runs", b'{"dataset": "' + b"x" * 70000 + b'.jsonl"}', {}, 413, "payload_too_large"),
        ("create_run", "runs", b'{"dataset": "missing.jsonl"}', {}, 404, "blob_not_found"),
        ("create_run", "runs", b'{"train": "a.jsonl"}', {}, 400, "invalid_input"),  # test missing
        (
            "create_run",
            "runs",
            b'{"dataset": "a.jsonl", "train": "b.jsonl", "test": "c.jsonl"}',
            {},
            400,
            "invalid_input",
        ),
        ("create_run", "runs", b'{"train": "../a.jsonl", "test": "c.jsonl"}', {}, 400, "invalid_input"),
        ("cancel_run", "runs/nope/cancel", b"", {"run_id": "nope"}, 400, "invalid_input"),
        ("cancel_run", "runs/ft-000000000000/cancel", b"", {"run_id": "ft-000000000000"}, 404, "run_not_found"),
        ("restore_endpoint", "endpoints/x/restore", b"", {"name": "../x"}, 400, "invalid_input"),
        ("restore_endpoint", "endpoints/ep-none/restore", b"", {"name": "ep-none"}, 404, "endpoint_not_found"),
    ],
)
def test_bad_http_input_gets_a_clear_error(ctx: AppContext, handler, route, body, route_params, status, code):
    response = function(handler)(http_request("POST", route, body=body, route_params=route_params))

    assert (response.status_code, body_of(response)["error"]["code"]) == (status, code)


def body_of(response) -> dict:
    return orjson.loads(response.get_body())


def test_create_run_takes_overrides_and_force_makes_a_new_run(ctx: AppContext):
    # given a dataset in the container
    upload(ctx.settings, "adhoc.jsonl", VALID)
    request = b'{"dataset": "adhoc.jsonl", "parameters": {"learning_rate": 0.001}}'

    # when it is run with an override, twice, then forced
    first = create_run(http_request("POST", "runs", body=request))
    again = create_run(http_request("POST", "runs", body=request))
    forced = create_run(http_request("POST", "runs", body=request[:-1] + b', "force": true}'))

    # then the same request is one run, and force makes another
    assert first.status_code == again.status_code == forced.status_code == 202
    assert body_of(first)["run_id"] == body_of(again)["run_id"] != body_of(forced)["run_id"]
    assert body_of(first)["parameters"]["learning_rate"] == 0.001
    assert body_of(first)["state"] == "submitted"


def test_create_run_of_an_invalid_dataset_is_422_with_the_run(ctx: AppContext):
    upload(ctx.settings, "broken.jsonl", BROKEN)

    response = create_run(http_request("POST", "runs", body=b'{"dataset": "broken.jsonl"}'))

    assert response.status_code == 422
    assert body_of(response)["state"] == "rejected"


def test_cancel_run_cancels_a_submitted_run_and_refuses_a_finished_one(ctx: AppContext, engine):
    function("on_dataset_uploaded")(upload(ctx.settings, "c.jsonl", VALID))
    run_id = ctx.ledger.list()[0].run_id

    canceled = cancel_run(http_request("POST", f"runs/{run_id}/cancel", route_params={"run_id": run_id}))
    again = cancel_run(http_request("POST", f"runs/{run_id}/cancel", route_params={"run_id": run_id}))

    assert canceled.status_code == 202 and body_of(canceled)["state"] == "canceled"
    assert engine.jobs[run_id].status == "canceled"
    assert again.status_code == 409 and body_of(again)["error"]["code"] == "invalid_transition"


def test_list_endpoints_shows_idle_time_and_counts_but_no_key(ctx: AppContext, engine):
    engine.create_or_update_endpoint("ep-a", {"ft-autopilot-managed": "true"})

    response = list_endpoints(http_request("GET", "endpoints"))

    (endpoint,) = body_of(response)["endpoints"]
    assert endpoint["name"] == "ep-a" and endpoint["managed"] is True and endpoint["request_count"] == 0
    assert endpoint["idle_minutes"] is not None
    assert b"primary" not in response.get_body() and b"key" not in response.get_body()


def test_create_run_with_explicit_train_and_test_files_keeps_them_apart(ctx: AppContext, engine):
    # given separate train and test files (the notebook's train_sft / test_sft)
    lines = VALID.splitlines(keepends=True)
    upload(ctx.settings, "ultrachat/train_sft.jsonl", b"".join(lines[:200]))
    upload(ctx.settings, "ultrachat/test_sft.jsonl", b"".join(lines[200:]))
    request = b'{"train": "ultrachat/train_sft.jsonl", "test": "ultrachat/test_sft.jsonl"}'

    # when a run is created from them, twice
    first = create_run(http_request("POST", "runs", body=request))
    again = create_run(http_request("POST", "runs", body=request))

    # then one run holds every train line as train and every test line as test
    run = body_of(first)
    assert first.status_code == again.status_code == 202 and body_of(again)["run_id"] == run["run_id"]
    assert run["validation"]["train_rows"] == 200 and run["validation"]["test_rows"] == 40
    container = ctx.settings.datasets_container
    assert run["sources"] == [f"{container}/ultrachat/train_sft.jsonl", f"{container}/ultrachat/test_sft.jsonl"]
    stored_test = ctx.store.read(container, run["artifacts"]["test"].partition("/")[2])[0]
    assert stored_test.splitlines() == [line.rstrip(b"\n") for line in lines[200:]]
    assert engine.submit_calls == 1


def test_a_bad_test_file_rejects_the_pair_and_names_the_file(ctx: AppContext):
    upload(ctx.settings, "train.jsonl", VALID)
    upload(ctx.settings, "test.jsonl", BROKEN)

    response = create_run(http_request("POST", "runs", body=b'{"train": "train.jsonl", "test": "test.jsonl"}'))

    assert response.status_code == 422
    run = body_of(response)
    report = orjson.loads(
        ctx.store.read(ctx.settings.datasets_container, run["artifacts"]["report_json"].partition("/")[2])[0]
    )
    assert report["errors"][0]["line"] == 6 and report["errors"][0]["message"].startswith("test file: ")
