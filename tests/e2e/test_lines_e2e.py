"""Model lines through the dev host's registered functions, with the real local engine and the tiny model: two lines
side by side, an accumulating retrain that touches nothing of the other line, an unusable line.json, a killed
training worker that is retried, and a user error that is not."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from shared.adapters.azurite import Azurite
from shared.cli.demo import asked_again
from shared.context import get_context
from shared.devhost import DevHost
from tests.e2e.hosts import local_dev_host, put_dataset, run_of
from tests.e2e.test_lifecycle_e2e import call, wait_for_state

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ultrachat_sample.jsonl"
LINES = SAMPLE.read_bytes().splitlines(keepends=True)
ENDED = {"deployed", "superseded", "gated_out", "failed", "rolled_back", "rejected"}
DATASETS = "lines-datasets"


def prompt_ids(data: bytes) -> set[str]:
    return {json.loads(line)["prompt_id"] for line in data.splitlines()}


@pytest.fixture
def host(azurite: Azurite, tmp_path: Path):
    with local_dev_host(azurite, tmp_path / "state", "lines", idle_minutes=30) as dev:
        yield dev


def test_two_lines_side_by_side_with_an_accumulating_retrain(host: DevHost):
    # given two lines: support accumulates, legal does not
    put_dataset(host, "support/line.json", json.dumps({"accumulate": True}).encode())
    put_dataset(host, "legal/line.json", json.dumps({"parameters": {"logging_steps": 3}}).encode())

    # when each gets an upload, at the same time
    put_dataset(host, "support/first.jsonl", b"".join(LINES))
    put_dataset(host, "legal/all.jsonl", b"".join(LINES[1:] + LINES[:1]))
    support = wait_for_state(host, run_of(host, "support/first.jsonl")["run_id"], ENDED, 420)
    legal = wait_for_state(host, run_of(host, "legal/all.jsonl")["run_id"], ENDED, 420)

    # then each line has its own run, model and endpoint, both serving
    assert (support["state"], legal["state"]) == ("deployed", "deployed"), (support.get("error"), legal.get("error"))
    assert (support["line"], legal["line"]) == ("support", "legal")
    assert support["model"]["name"] == "support-ft-chat" and legal["model"]["name"] == "legal-ft-chat"
    assert support["endpoint"]["name"] != legal["endpoint"]["name"]
    assert support["line_config"]["accumulate"] is True and legal["line_config"]["parameters"]["logging_steps"] == 3
    assert len(support["line_config_sha256"]) == 64
    legal_endpoint_before = _endpoint(host, legal["endpoint"]["name"])

    # when support gets a second upload: 60 conversations it has, and 60 new ones
    second = b"".join(LINES[180:]) + asked_again(LINES[:60])
    put_dataset(host, "support/second.jsonl", second)
    first_ids, second_ids = prompt_ids(b"".join(LINES)), prompt_ids(second)
    retrain = wait_for_state(host, run_of(host, "support/second.jsonl")["run_id"], ENDED, 420)

    # then it trained on the union of both uploads, each conversation once, and says so
    assert retrain["line"] == "support"
    assert retrain["uploads"] == [
        {"blob": f"{DATASETS}/support/first.jsonl", "rows": len(first_ids)},  # the sample repeats some prompts
        {"blob": f"{DATASETS}/support/second.jsonl", "rows": len(second_ids - first_ids)},
    ]
    assert len(second_ids - first_ids) < len(second_ids)  # some of the second were in the first already
    assert retrain["validation"]["rows"] == len(first_ids | second_ids)
    assert retrain["state"] in {"deployed", "gated_out"}, retrain.get("error")
    # and nothing of the legal line changed: same deployment, same traffic, same scoring URI
    assert _endpoint(host, legal["endpoint"]["name"]) == legal_endpoint_before
    status, legal_line = call(host, "GET", "/api/lines/legal")
    assert status == 200 and legal_line["champion"] == legal["model"] and legal_line["endpoint_state"] == "serving"
    assert legal_line["last_run"] == legal["run_id"]
    lines = {line["line"]: line for line in call(host, "GET", "/api/lines")[1]["lines"]}
    assert set(lines) == {"support", "legal"}
    replaced = retrain["state"] == "deployed"  # then the first run's deployment was retired
    expected = {"deployed": 1, "superseded": 1} if replaced else {"deployed": 1, "gated_out": 1}
    assert lines["support"]["runs_by_state"] == expected
    assert [r["run_id"] for r in call(host, "GET", "/api/runs?line=legal")[1]["runs"]] == [legal["run_id"]]


def test_an_unusable_line_config_rejects_the_upload_naming_the_key(host: DevHost):
    # given a line whose line.json has a wrong type
    put_dataset(host, "broken/line.json", json.dumps({"accumulate": "yes"}).encode())

    # when a dataset is uploaded to it, and one to a folder that is not a line name
    put_dataset(host, "broken/data.jsonl", b"".join(LINES))
    put_dataset(host, "Not_A_Line/data.jsonl", b"".join(LINES))

    # then both are recorded rejected, with the stable codes and the key
    broken = wait_for_state(host, run_of(host, "broken/data.jsonl")["run_id"], {"rejected"}, 60)
    assert broken["error"]["code"] == "invalid_line_config"
    assert broken["error"]["message"].startswith("broken/line.json: accumulate: ")
    misnamed = wait_for_state(host, run_of(host, "Not_A_Line/data.jsonl")["run_id"], {"rejected"}, 60)
    assert misnamed["error"]["code"] == "invalid_line_name"


def test_a_killed_worker_is_retried_and_a_user_error_is_not(host: DevHost):
    # given a line whose training is under way, and a line whose base model does not exist
    put_dataset(host, "flaky/data.jsonl", b"".join(LINES))
    put_dataset(host, "wrong/line.json", json.dumps({"base_model": "/no/such/model"}).encode())
    put_dataset(host, "wrong/data.jsonl", b"".join(LINES))
    flaky = wait_for_state(host, run_of(host, "flaky/data.jsonl")["run_id"], {"running"}, 120)

    # when the first training worker is killed
    _kill_worker(flaky["job_name"])

    # then the run is resubmitted once, with the cause, and its second job trains it to the end
    done = wait_for_state(host, flaky["run_id"], ENDED, 420)
    assert done["state"] == "deployed", done.get("error")
    (retry,) = done["job_retries"]
    assert retry["job_name"] == flaky["run_id"] and retry["cause"].startswith("worker_lost: ")
    assert done["job_name"] == f"{flaky['run_id']}-r1"
    # and the user error fails its run at once, not retried
    wrong = wait_for_state(host, run_of(host, "wrong/data.jsonl")["run_id"], ENDED, 300)
    assert wrong["state"] == "failed" and wrong["job_retries"] == []
    assert wrong["error"]["message"].startswith("base_model_unavailable: ")


def _endpoint(host: DevHost, name: str) -> dict:
    (endpoint,) = [e for e in call(host, "GET", "/api/endpoints")[1]["endpoints"] if e["name"] == name]
    return {key: endpoint[key] for key in ("name", "scoring_uri", "traffic", "created_at")}


def _kill_worker(job_name: str) -> None:
    status = get_context().settings.local_state_dir / "jobs" / job_name / "status.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = json.loads(status.read_text()).get("pid") if status.exists() else None
        if pid:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_name} reported no worker pid")
