"""The whole story through the dev host, with the real local engine and the tiny model:
upload -> validated, trained, gated, registered, deployed -> the endpoint answers -> idle teardown -> restore."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.azurite import Azurite
from shared.context import get_context
from shared.devhost import DevHost
from shared.domain.scoring import answer_text, scoring_request
from shared.engine.local.processes import is_alive
from tests.e2e.hosts import local_dev_host

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ultrachat_sample.jsonl"


@pytest.fixture
def host(azurite: Azurite, tmp_path: Path):
    with local_dev_host(azurite, tmp_path / "state", "e2e") as dev:
        yield dev


def call(host: DevHost, method: str, path: str, *, key: str | None = "use-host-key") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["x-functions-key"] = host.function_key if key == "use-host-key" else key
    request = urllib.request.Request(
        host.base_url + path, method=method, headers=headers, data=b"{}" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for_state(host: DevHost, run_id: str, states: set[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, run = call(host, "GET", f"/api/runs/{run_id}")
        if status == 200 and run["state"] in states:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not in {states} after {timeout_s} s: {run['state']}")


def ask(run: dict) -> str | None:
    key = get_context().engine.get_keys(run["endpoint"]["name"]).primary
    request = urllib.request.Request(
        run["endpoint"]["scoring_uri"],
        data=json.dumps(scoring_request([{"role": "user", "content": "My Acme router keeps disconnecting."}])).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return answer_text(json.loads(response.read()))


def test_upload_to_answer_to_teardown_to_restore(host: DevHost):
    # given the API refuses a caller without the function key
    assert call(host, "GET", "/api/runs", key=None)[0] == 401

    # when the sample dataset is uploaded, twice (a redelivery and a re-upload of the same bytes)
    service = BlobServiceClient.from_connection_string(host.connection_string)
    blob = service.get_blob_client("e2e-datasets", "ultrachat/train_sft.jsonl")
    blob.upload_blob(SAMPLE.read_bytes(), overwrite=True)
    deadline = time.monotonic() + 30
    while not (runs := call(host, "GET", "/api/runs")[1]["runs"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    blob.upload_blob(SAMPLE.read_bytes(), overwrite=True)

    # then one run goes all the way to deployed, through every state, once
    (run,) = runs
    run = wait_for_state(host, run["run_id"], {"deployed", "failed", "gated_out", "rolled_back"}, 300)
    assert run["state"] == "deployed", run.get("error")
    assert [step["to"] for step in run["history"]] == [
        "received",
        "validating",
        "submitted",
        "running",
        "trained",
        "registered",
        "deploying",
        "deployed",
    ]
    assert len(call(host, "GET", "/api/runs")[1]["runs"]) == 1
    assert run["metrics"]["eval_loss"] < run["metrics"]["base_eval_loss"]
    assert run["smoke_test"]["passed"]

    # and the endpoint answers the seed's request
    assert ask(run)

    # when nobody calls it for IDLE_MINUTES, the timer tears it down and its processes are gone
    endpoint = run["endpoint"]["name"]
    torn_down = wait_for_state(host, run["run_id"], {"torn_down"}, 60)
    assert endpoint not in {e["name"] for e in call(host, "GET", "/api/endpoints")[1]["endpoints"]}
    assert torn_down["model"] == run["model"]

    # when it is restored through the API, the champion answers again on the same endpoint name
    status, restored = call(host, "POST", f"/api/endpoints/{endpoint}/restore")
    assert status == 202 and restored["state"] == "deployed" and restored["endpoint"]["name"] == endpoint
    assert ask(restored)
    assert get_context().engine.list_endpoints()[0].name == endpoint

    # and when the endpoint is deleted, its router and deployment processes are gone
    config = json.loads((get_context().settings.local_state_dir / "endpoints" / endpoint / "endpoint.json").read_text())
    pids = [config["router_pid"], *(spec["pid"] for spec in config["deployments"].values())]
    assert all(is_alive(pid) for pid in pids)
    get_context().engine.delete_endpoint(endpoint)
    assert not any(is_alive(pid) for pid in pids)
