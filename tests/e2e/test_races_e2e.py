"""Two uploads at once on a fresh state, through the dev host, with the real local engine and the tiny model:
both first jobs train (one MLflow store, initialized once), both finish together on one endpoint, and exactly one
deployment is left serving. A damaged record then stops neither the listing nor the idle teardown."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.azurite import Azurite
from shared.adapters.ledger import RECORDS
from shared.context import get_context
from shared.devhost import DevHost
from tests.e2e.hosts import local_dev_host
from tests.e2e.test_lifecycle_e2e import call, wait_for_state

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ultrachat_sample.jsonl"
ENDED = {"deployed", "superseded", "gated_out", "failed", "rolled_back", "rejected"}


@pytest.fixture
def host(azurite: Azurite, tmp_path: Path):
    with local_dev_host(azurite, tmp_path / "fresh-state", "races", reconcile_after_minutes=0) as dev:
        yield dev


def settled(host: DevHost, run_ids: list[str], timeout_s: float = 60) -> list[dict]:
    """The runs once at most one of them is deployed: the other's shift may still be retiring the first."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [call(host, "GET", f"/api/runs/{run_id}")[1] for run_id in run_ids]
        if sum(run["state"] == "deployed" for run in runs) <= 1 or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def test_two_first_uploads_at_once_both_train_and_leave_one_deployment_serving(host: DevHost):
    # given a fresh state (no MLflow store yet) and two different datasets of one base model, uploaded at once
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    service = BlobServiceClient.from_connection_string(host.connection_string)
    for name, data in (("races/a.jsonl", b"".join(lines)), ("races/b.jsonl", b"".join(lines[1:] + lines[:1]))):
        service.get_blob_client("races-datasets", name).upload_blob(data, overwrite=True)
    deadline = time.monotonic() + 60
    while len(runs := call(host, "GET", "/api/runs")[1]["runs"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(runs) == 2

    # when both are carried to their end (deployed is not final while the other may still replace it)
    for run in runs:
        wait_for_state(host, run["run_id"], ENDED, 420)
    ended = settled(host, [run["run_id"] for run in runs])

    # then both jobs trained (neither fell over the store's first migration)
    for run in ended:
        assert "trained" in [step["to"] for step in run["history"]], (run["state"], run.get("error"))
    # and exactly one serves; the other says why it does not
    (winner,) = [run for run in ended if run["state"] == "deployed"]
    (other,) = [run for run in ended if run is not winner]
    assert other["state"] in {"superseded", "gated_out"}, (other["state"], other.get("error"))
    assert other["history"][-1]["reason"]
    endpoint = winner["endpoint"]["name"]
    (listed,) = [e for e in call(host, "GET", "/api/endpoints")[1]["endpoints"] if e["name"] == endpoint]
    assert {name: weight for name, weight in listed["traffic"].items() if weight} == {
        winner["endpoint"]["deployment"]: 100
    }
    assert list(listed["traffic"]) == [winner["endpoint"]["deployment"]]

    # when a run record is damaged
    runs_container = get_context().settings.runs_container
    service.get_blob_client(runs_container, f"{RECORDS}ft-0123456789ab.json").upload_blob(b'{"run_id": "ft-01')

    # then the listing still answers, naming it, and the idle sweep still tears the endpoint down
    status, listing = call(host, "GET", "/api/runs")
    assert status == 200 and [bad["run_id"] for bad in listing["unreadable"]] == ["ft-0123456789ab"]
    assert len(listing["runs"]) == 2
    wait_for_state(host, winner["run_id"], {"torn_down"}, 90)
    assert endpoint not in {e["name"] for e in call(host, "GET", "/api/endpoints")[1]["endpoints"]}
