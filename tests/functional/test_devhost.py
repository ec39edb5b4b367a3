"""The dev host serving function_app over real HTTP, against the session's Azurite, with a fake engine.

The first half drives the real app (keys, routes, the blob poller, the Event Grid webhook, the admin API); the second
half a small probe app of its own, to pin down host behaviour the app cannot show (prefixes, retries and poison
blobs, receipts across a restart, timers, anonymous routes).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient
from pydantic import SecretStr

from shared.adapters.azurite import free_port
from shared.context import get_context
from shared.devhost import DevHost, DevHostError, serve
from shared.settings import Settings
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]
SAMPLE = (REPO / "samples" / "ultrachat_sample.jsonl").read_bytes()
AML_EVENT = (REPO / "tests" / "events" / "aml_run_status_changed.json").read_bytes()
POLL_S = 0.1


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    host: DevHost, method: str, path: str, *, key: str | None = None, body: bytes | None = None, **headers: str
) -> Reply:
    """One HTTP request; `key="header"` sends the host's key as x-functions-key, `key="query"` as ?code=."""
    if key == "header":
        headers["x-functions-key"] = host.function_key
    elif key == "query":
        path += ("&" if "?" in path else "?") + f"code={host.function_key}"
    request = urllib.request.Request(
        host.base_url + path, data=body, method=method, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s: {condition}")


def upload(host: DevHost, container: str, name: str, data: bytes) -> str:
    """Upload as a user would; return the new ETag."""
    service = BlobServiceClient.from_connection_string(host.connection_string)
    return service.get_blob_client(container, name).upload_blob(data, overwrite=True)["etag"].strip('"')


def receipts(host: DevHost) -> dict[str, dict[str, str]]:
    return json.loads(host.receipts_path.read_text()) if host.receipts_path.exists() else {}


def receipts_for(host: DevHost, container: str, name: str) -> dict[str, str]:
    """ETag -> status of the host's receipts for one blob."""
    marker = f"/{container}/{name}|"
    return {key.rsplit("|", 1)[1]: entry["status"] for key, entry in receipts(host).items() if marker in key}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def host(settings: Settings, engine: FakeEngine) -> Iterator[DevHost]:
    server = DevHost(
        settings, port=free_port(), engine_factory=lambda: engine, blob_poll_interval_s=POLL_S, announce=None
    )
    try:
        yield server.start()
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------------------------
# The real app


def test_function_routes_require_a_key_in_the_header_or_the_query(host: DevHost):
    # given the host serving list_runs (authLevel FUNCTION)
    # when calling it without a key, with a wrong one, in the header and as ?code=
    anonymous = call(host, "GET", "/api/runs")
    wrong = call(host, "GET", "/api/runs", x_functions_key="not-the-key")
    wrong_code = call(host, "GET", "/api/runs?code=not-the-key")
    in_header = call(host, "GET", "/api/runs", key="header")
    in_query = call(host, "GET", "/api/runs", key="query")

    # then only a valid key gets through
    assert (anonymous.status, wrong.status, wrong_code.status) == (401, 401, 401)
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert (in_header.status, in_header.json()) == (200, {"runs": [], "unreadable": []})
    assert (in_query.status, in_query.json()) == (200, {"runs": [], "unreadable": []})
    assert in_header.headers["Content-Type"] == "application/json"


def test_validate_answers_the_report_over_http(host: DevHost):
    # given the valid sample, when POSTed with the key
    response = call(host, "POST", "/api/validate", key="header", body=SAMPLE, content_type="application/x-ndjson")

    # then the app's report comes back whole
    assert response.status == 200
    report = response.json()
    assert (report["valid"], report["rows"], report["error_counts"]) == (True, 240, {})
    assert report["split"]["train"] + report["split"]["test"] == 240


def test_route_params_reach_get_run_and_its_error_comes_back(host: DevHost):
    # given an empty ledger, when asking for a run by id, with a method the route lacks, and on no route
    missing = call(host, "GET", "/api/runs/ft-000000000000", key="header")
    wrong_method = call(host, "DELETE", "/api/runs/ft-000000000000", key="header")
    no_route = call(host, "GET", "/api/nothing/here", key="header")

    # then the run id reached the app (its 404 names it), and the host answers the others itself
    assert missing.status == 404
    assert missing.json() == {"error": {"code": "run_not_found", "message": "no run ft-000000000000"}}
    assert (wrong_method.status, wrong_method.headers["Allow"]) == (405, "GET")
    assert (no_route.status, no_route.json()["error"]["code"]) == (404, "not_found")


def test_an_upload_becomes_one_run_and_a_reupload_is_delivered_again_but_stays_one_run(
    host: DevHost, settings: Settings, engine: FakeEngine
):
    # given the sample uploaded into the datasets container
    first_etag = upload(host, settings.datasets_container, "ultrachat.jsonl", SAMPLE)

    # when the poller picks it up
    def submitted_runs() -> list[dict[str, Any]]:
        runs = call(host, "GET", "/api/runs", key="header").json()["runs"]
        return runs if runs and all(run["state"] == "submitted" for run in runs) else []

    runs = wait_for(submitted_runs)

    # then one run exists for it, submitted once, and its version was delivered once
    assert [(run["dataset"]["blob"], run["state"]) for run in runs] == [("ultrachat.jsonl", "submitted")]
    time.sleep(3 * POLL_S)
    assert receipts_for(host, settings.datasets_container, "ultrachat.jsonl") == {first_etag: "delivered"}

    # when the same bytes are uploaded again under the same name (a new ETag)
    second_etag = upload(host, settings.datasets_container, "ultrachat.jsonl", SAMPLE)
    wait_for(lambda: second_etag in receipts_for(host, settings.datasets_container, "ultrachat.jsonl"))

    # then the new version was delivered too, and the app kept it to the one run
    assert second_etag != first_etag
    assert receipts_for(host, settings.datasets_container, "ultrachat.jsonl") == {
        first_etag: "delivered",
        second_etag: "delivered",
    }
    again = call(host, "GET", "/api/runs", key="header").json()["runs"]
    assert [run["run_id"] for run in again] == [runs[0]["run_id"]]
    assert (engine.submit_calls, list(engine.jobs)) == (1, [runs[0]["run_id"]])


def test_event_grid_webhook_needs_the_key_and_delivers_the_sample_event(host: DevHost):
    # given the Azure ML sample event (the app will ignore it: not this workspace's run)
    webhook = "/runtime/webhooks/eventgrid?functionName=on_job_event"

    # when delivered without the key, with it as ?code= and as a header
    without_key = call(host, "POST", webhook, body=AML_EVENT, aeg_event_type="Notification")
    delivered = call(host, "POST", webhook, key="query", body=AML_EVENT, aeg_event_type="Notification")
    in_header = call(host, "POST", webhook, key="header", body=AML_EVENT, content_type="application/json")

    # then only keyed deliveries reach the function, and they succeed
    assert without_key.status == 401
    assert (delivered.status, delivered.body) == (200, b"")
    assert in_header.status == 200


def test_event_grid_subscription_validation_handshake(host: DevHost):
    # given Event Grid's validation event
    handshake = json.dumps(
        [
            {
                "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
                "topic": "/subscriptions/00000000-0000-0000-0000-000000000000",
                "subject": "",
                "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"},
                "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                "eventTime": "2026-11-24T22:12:19.4556811Z",
                "metadataVersion": "1",
                "dataVersion": "1",
            }
        ]
    ).encode()

    # when it is delivered with aeg-event-type SubscriptionValidation
    response = call(
        host,
        "POST",
        "/runtime/webhooks/eventgrid?functionName=on_job_event",
        key="query",
        body=handshake,
        aeg_event_type="SubscriptionValidation",
    )

    # then the code is echoed back
    assert (response.status, response.json()) == (200, {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"id": "1", "eventType": "x", "subject": "s", "eventTime": "2026-01-01T00:00:00Z"}', 400, "invalid_events"),
        (b'[{"id": "1", "subject": "s", "eventTime": "2026-01-01T00:00:00Z"}]', 400, "invalid_events"),
        (b"[42]", 400, "invalid_events"),
    ],
)
def test_event_grid_webhook_rejects_a_malformed_delivery(host: DevHost, body: bytes, status: int, code: str):
    # given a body that is not JSON, not an array, or holds no valid event; when delivered; then 400 (no retry)
    response = call(host, "POST", "/runtime/webhooks/eventgrid?functionName=on_job_event", key="query", body=body)

    assert (response.status, response.json()["error"]["code"]) == (status, code)


def test_unknown_functions_are_404_and_admin_needs_the_key(host: DevHost):
    # when calling the admin API and the webhook for functions that do not exist (or are not of that trigger)
    unknown_admin = call(host, "POST", "/admin/functions/no_such_function", key="header", body=b'{"input": ""}')
    admin_without_key = call(host, "POST", "/admin/functions/sweep_idle_endpoints", body=b'{"input": ""}')
    unknown_webhook = call(host, "POST", "/runtime/webhooks/eventgrid?functionName=nope", key="query", body=AML_EVENT)
    not_an_event_function = call(
        host, "POST", "/runtime/webhooks/eventgrid?functionName=list_runs", key="query", body=AML_EVENT
    )
    missing_blob = call(
        host, "POST", "/admin/functions/on_dataset_uploaded", key="header", body=b'{"input": "absent.jsonl"}'
    )

    # then each is refused for what it is
    assert (unknown_admin.status, unknown_admin.json()["error"]["code"]) == (404, "function_not_found")
    assert admin_without_key.status == 401
    assert (unknown_webhook.status, not_an_event_function.status) == (404, 404)
    assert (missing_blob.status, missing_blob.json()["error"]["code"]) == (404, "blob_not_found")


def test_admin_api_runs_the_blob_function_on_a_named_blob(host: DevHost, settings: Settings):
    # given a blob in the datasets container (the poller may deliver it too: the app keeps that to one run)
    upload(host, settings.datasets_container, "by-hand.jsonl", SAMPLE)

    # when it is run through the admin API
    response = call(
        host, "POST", "/admin/functions/on_dataset_uploaded", key="header", body=b'{"input": "by-hand.jsonl"}'
    )

    # then it was accepted and a run exists
    assert (response.status, response.body) == (202, b"")
    runs = call(host, "GET", "/api/runs", key="header").json()["runs"]
    assert [run["dataset"]["blob"] for run in runs] == ["by-hand.jsonl"]


def test_handlers_get_the_hosts_storage_and_the_engine_posts_events_back_with_the_key(
    host: DevHost, settings: Settings
):
    # given a started host, when a handler asks for its context
    installed = get_context().settings

    # then it has the host's storage and the settings' containers, and job events come back here with the key
    assert installed.storage_connection_string is not None
    assert installed.storage_connection_string.get_secret_value() == host.connection_string
    assert installed.datasets_container == settings.datasets_container
    assert installed.local_events_webhook == (
        f"{host.base_url}/runtime/webhooks/eventgrid?functionName=on_job_event&code={host.function_key}"
    )


def test_the_key_is_printed_once_and_never_logged(
    settings: Settings, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    # given a host whose key comes from the settings
    caplog.set_level(logging.DEBUG)
    keyed = settings.model_copy(update={"devhost_function_key": SecretStr("s3cret-dev-key")})
    server = DevHost(keyed, port=free_port(), engine_factory=FakeEngine, blob_poll_interval_s=POLL_S)
    try:
        server.start()

        # when requests carry it in the query, including one the app logs with its URL
        ok = call(server, "GET", "/api/runs", key="query")
        missing = call(server, "GET", "/api/runs/ft-000000000000", key="query")
    finally:
        server.stop()

    # then it was used, printed exactly once, and appears in no log record
    assert (server.function_key, ok.status, missing.status) == ("s3cret-dev-key", 200, 404)
    printed = capsys.readouterr().out
    assert printed.count("s3cret-dev-key") == 1
    assert "function key: s3cret-dev-key" in printed
    assert "invoked get_run (httpTrigger): 404" in caplog.text
    assert "s3cret-dev-key" not in caplog.text


def test_a_bad_schedule_fails_the_start_and_leaves_nothing_running(settings: Settings):
    # given a timer schedule with five fields (classic cron) instead of NCRONTAB's six
    broken = settings.model_copy(update={"idle_sweep_schedule": "0 */15 * * *"})
    port = free_port()

    # when the host starts, then it refuses, naming the function and the problem
    with pytest.raises(DevHostError, match=r"sweep_idle_endpoints: NCRONTAB schedule '0 \*/15 \* \* \*' has 5 field"):
        DevHost(broken, port=port, announce=None).start()

    # and nothing was left listening or running
    assert not any(t.name.startswith("devhost-") for t in threading.enumerate())
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_without_a_connection_the_host_runs_its_own_azurite_and_stops_it(tmp_path: Path):
    # given settings that name no storage
    bare = Settings(storage_connection_string=None, local_state_dir=tmp_path / "state")
    server = DevHost(bare, port=free_port(), engine_factory=FakeEngine, announce=None)

    # when the host starts
    server.start()
    try:
        assert server.connection_string is not None
        blob_endpoint = server.connection_string.split("BlobEndpoint=", 1)[1].split(";", 1)[0]
        azurite_port = int(blob_endpoint.split(":")[2].split("/")[0])
        # then it serves from an Azurite of its own, with the app's containers created
        assert call(server, "GET", "/api/runs", key="header").json() == {"runs": [], "unreadable": []}
        service = BlobServiceClient.from_connection_string(server.connection_string)
        assert {c.name for c in service.list_containers()} >= {bare.datasets_container, bare.runs_container}
        assert (tmp_path / "state" / "azurite" / "azurite.log").exists()
    finally:
        server.stop()

    # and stopping the host stopped that Azurite
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", azurite_port)) != 0


# ----------------------------------------------------------------------------------------------------------------
# A probe app for host behaviour


class Probe:
    """A function app recording what the host hands its functions; `fail_blobs` makes the blob function raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_blobs = False
        self.app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
        app = self.app

        @app.function_name("probe_blob")
        @app.blob_trigger(arg_name="blob", path="%DATASETS_CONTAINER%/incoming/{name}", connection="DatasetStorage")
        def probe_blob(blob: func.InputStream) -> None:
            self.calls.append(("blob", (blob.name, blob.read())))
            if self.fail_blobs:
                raise RuntimeError("probe failure")

        @app.function_name("probe_timer")
        @app.timer_trigger(arg_name="timer", schedule="%IDLE_SWEEP_SCHEDULE%", run_on_startup=True)
        def probe_timer(timer: func.TimerRequest) -> None:
            self.calls.append(("timer", timer.past_due))

        @app.function_name("probe_events")
        @app.event_grid_trigger(arg_name="event")
        def probe_events(event: func.EventGridEvent) -> None:
            if event.subject == "fail":
                raise RuntimeError("probe failure")
            self.calls.append(("event", (type(event).__name__, event.id, event.get_json())))

        @app.function_name("probe_hello")
        @app.route(route="hello/{who}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
        def probe_hello(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse(f"hello {req.route_params['who']} {req.params.get('n')}", headers={"X-Probe": "1"})

    def of(self, kind: str) -> list[Any]:
        return [value for what, value in self.calls if what == kind]


@pytest.fixture
def probe() -> Probe:
    return Probe()


def start_probe_host(probe: Probe, settings: Settings, *, schedule: str = "0 0 0 1 1 *") -> DevHost:
    configured = settings.model_copy(update={"idle_sweep_schedule": schedule})
    return DevHost(configured, port=free_port(), app=probe.app, blob_poll_interval_s=POLL_S, announce=None).start()


@pytest.fixture
def probe_host(probe: Probe, settings: Settings) -> Iterator[DevHost]:
    server = start_probe_host(probe, settings)
    try:
        yield server
    finally:
        server.stop()


def test_blobs_under_the_path_prefix_are_delivered_once_with_their_bytes(
    probe: Probe, probe_host: DevHost, settings: Settings
):
    # given one blob inside the trigger's path and one outside it
    upload(probe_host, settings.datasets_container, "elsewhere/a.jsonl", b"outside")
    upload(probe_host, settings.datasets_container, "incoming/b.jsonl", b"inside")

    # when the poller has run a few times
    wait_for(lambda: probe.of("blob"))
    time.sleep(5 * POLL_S)

    # then only the matching blob was delivered, once, as an InputStream of its content
    assert probe.of("blob") == [(f"{settings.datasets_container}/incoming/b.jsonl", b"inside")]


def test_a_failing_blob_is_retried_up_to_the_poison_threshold_then_given_up(
    probe: Probe, probe_host: DevHost, settings: Settings
):
    # given a blob function that always raises
    probe.fail_blobs = True
    etag = upload(probe_host, settings.datasets_container, "incoming/poison.jsonl", b"x")

    # when the poller has had many chances
    wait_for(lambda: len(probe.of("blob")) >= 5)
    time.sleep(5 * POLL_S)

    # then it tried exactly five times and marked that version as poison
    assert len(probe.of("blob")) == 5
    assert receipts_for(probe_host, settings.datasets_container, "incoming/poison.jsonl") == {etag: "poison"}


def test_blobs_present_at_start_are_delivered_once_and_not_again_after_a_restart(probe: Probe, settings: Settings):
    # given a blob that is there before the host starts
    service = BlobServiceClient.from_connection_string(settings.storage_connection_string.get_secret_value())
    service.create_container(settings.datasets_container)
    service.get_blob_client(settings.datasets_container, "incoming/early.jsonl").upload_blob(b"early")

    # when a host starts, then a second one after it with the same state folder
    first = start_probe_host(probe, settings)
    try:
        wait_for(lambda: probe.of("blob"))
    finally:
        first.stop()
    second = start_probe_host(probe, settings)
    try:
        upload(second, settings.datasets_container, "incoming/late.jsonl", b"late")
        wait_for(lambda: len(probe.of("blob")) >= 2)
        time.sleep(3 * POLL_S)
    finally:
        second.stop()

    # then the early blob was delivered by the initial scan only, and the late one by the second host
    assert [name.rsplit("/", 1)[1] for name, _ in probe.of("blob")] == ["early.jsonl", "late.jsonl"]


def test_a_timer_runs_on_startup_then_on_its_schedule(probe: Probe, settings: Settings):
    # given a schedule of every second, from the app setting the binding names
    server = start_probe_host(probe, settings, schedule="* * * * * *")
    try:
        # when the host has run for a while
        wait_for(lambda: len(probe.of("timer")) >= 3, timeout_s=5)
    finally:
        server.stop()

    # then the startup run and the scheduled ones were on time
    assert probe.of("timer")[:3] == [False, False, False]


def test_admin_api_runs_a_timer_function(probe: Probe, probe_host: DevHost):
    # given the timer's startup run
    before = len(probe.of("timer"))

    # when it is run by hand
    response = call(probe_host, "POST", "/admin/functions/probe_timer", key="header", body=b'{"input": ""}')

    # then it ran once more, and the call was accepted
    assert (response.status, len(probe.of("timer"))) == (202, before + 1)


def test_anonymous_routes_need_no_key_and_other_methods_are_refused(probe_host: DevHost):
    # when an ANONYMOUS GET route is called without a key, by GET and by POST
    hello = call(probe_host, "GET", "/api/hello/world?n=3")
    post = call(probe_host, "POST", "/api/hello/world", body=b"")

    # then GET reaches it with its route and query parameters, and its response headers come back
    assert (hello.status, hello.body, hello.headers["X-Probe"]) == (200, b"hello world 3", "1")
    assert hello.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert (post.status, post.headers["Allow"]) == (405, "GET")


def test_event_grid_batches_invoke_once_per_event_in_both_schemas_and_a_failure_is_500(
    probe: Probe, probe_host: DevHost
):
    # given an Event Grid-schema event (7-digit fractional seconds, as Azure writes them) and a CloudEvent
    webhook = "/runtime/webhooks/eventgrid?functionName=probe_events"
    grid_event = {
        "id": "e1",
        "subject": "ok",
        "eventType": "T",
        "eventTime": "2026-11-24T10:21:09.1234567Z",
        "data": {"n": 1},
        "dataVersion": "1",
    }
    cloud_event = {
        "specversion": "1.0",
        "id": "c1",
        "source": "/s",
        "type": "T",
        "time": "2026-11-24T10:21:09Z",
        "data": {"n": 2},
    }

    # when a batch of both schemas is delivered, then one event whose handler raises
    batch = call(probe_host, "POST", webhook, key="query", body=json.dumps([grid_event, cloud_event]).encode())
    failing = call(
        probe_host, "POST", webhook, key="query", body=json.dumps([{**grid_event, "subject": "fail"}]).encode()
    )

    # then each event was one invocation with the right type, and the failure asks the sender to retry
    assert batch.status == 200
    assert probe.of("event") == [("EventGridEvent", "e1", {"n": 1}), ("CloudEvent", "c1", {"n": 2})]
    assert (failing.status, failing.json()["error"]["code"]) == (500, "function_failed")


def test_the_event_grid_blob_webhook_delivers_a_blob_created_event(
    probe: Probe, probe_host: DevHost, settings: Settings
):
    # given a blob inside the trigger's path (which the poller delivers too) and its BlobCreated event
    upload(probe_host, settings.datasets_container, "incoming/pushed.jsonl", b"pushed")
    wait_for(lambda: probe.of("blob"))  # the poller's delivery
    event = {
        "id": "b1",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2026-11-24T10:21:09Z",
        "subject": f"/blobServices/default/containers/{settings.datasets_container}/blobs/incoming/pushed.jsonl",
        "data": {"api": "PutBlob"},
        "dataVersion": "",
    }

    # when the event is pushed to the blob webhook, as Event Grid does on Flex Consumption
    response = call(
        probe_host,
        "POST",
        "/runtime/webhooks/blobs?functionName=Host.Functions.probe_blob",
        key="query",
        body=json.dumps([event]).encode(),
        aeg_event_type="Notification",
    )

    # then the blob was delivered again, by the event
    assert response.status == 202
    assert probe.of("blob") == [(f"{settings.datasets_container}/incoming/pushed.jsonl", b"pushed")] * 2


def test_serve_runs_until_stopped(settings: Settings, capsys: pytest.CaptureFixture[str]):
    # given serve() on a thread, as `autopilot serve` runs it
    ready, stop = threading.Event(), threading.Event()
    port = free_port()
    worker = threading.Thread(target=serve, args=(settings,), kwargs={"port": port, "ready": ready, "stop": stop})
    worker.start()
    try:
        assert ready.wait(30)

        # when it is called, then it answers
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
    finally:
        stop.set()
        worker.join(30)

    # and once stopped it has let go of the port
    assert not worker.is_alive()
    assert capsys.readouterr().out.count("function key: ") == 1
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_importing_the_dev_host_pulls_in_no_heavy_library():
    # given a fresh interpreter; when shared.devhost is imported; then none of the ML stack came with it
    heavy = ("torch", "transformers", "mlflow", "azure.ai.ml")
    probe = f"import sys, shared.devhost; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"
