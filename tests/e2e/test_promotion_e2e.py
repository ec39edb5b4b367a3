"""Promotion on evidence, through the dev host's registered functions, with the real local engine and the tiny model:
a good fine-tune is promoted after its evaluation against the base model; a degenerate one is refused while the
champion keeps serving; one trained to answer everything with one sentence is refused for forgetting."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.azurite import Azurite
from shared.context import get_context
from shared.devhost import DevHost
from shared.domain.evaluation.probes import load_probes
from shared.domain.scoring import answer_text, scoring_request
from shared.engine.base import ScoringRequest
from tests.e2e.hosts import local_dev_host, put_dataset, run_of
from tests.e2e.test_lifecycle_e2e import call, wait_for_state
from tests.e2e.test_lines_e2e import ENDED, LINES
from tests.unit.test_probes import ANSWERS


@pytest.fixture
def host(azurite: Azurite, tmp_path: Path):
    with local_dev_host(azurite, tmp_path / "state", "promo", idle_minutes=30) as dev:
        yield dev


def read(host: DevHost, blob: str) -> bytes:
    container, _, name = blob.partition("/")
    service = BlobServiceClient.from_connection_string(host.connection_string)
    return service.get_blob_client(container, name).download_blob().readall()


def rows(conversations: list[tuple[str, str]], tag: str) -> bytes:
    """(question, answer) pairs as ultrachat rows with their own prompt ids."""
    out = []
    for n, (question, answer) in enumerate(conversations):
        prompt_id = hashlib.sha256(f"{tag}-{n}-{question}".encode()).hexdigest()
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        out.append(json.dumps({"prompt": question, "prompt_id": prompt_id, "messages": messages}) + "\n")
    return "".join(out).encode()


def questions_of_the_sample() -> list[str]:
    return [json.loads(line)["messages"][0]["content"] for line in LINES]


def serving(host: DevHost, endpoint: str) -> dict[str, int]:
    (found,) = [e for e in call(host, "GET", "/api/endpoints")[1]["endpoints"] if e["name"] == endpoint]
    return found["traffic"]


def ask(host: DevHost, run: dict) -> str:
    """The endpoint's answer to the seed's request, unpinned: whoever has the traffic answers."""
    body = scoring_request([{"role": "user", "content": "My Acme printer won't charge. What should I do?"}])
    answer = answer_text(get_context().engine.invoke(ScoringRequest(run["endpoint"]["name"], body)))
    assert answer is not None
    return answer


def test_a_good_fine_tune_is_promoted_on_evidence_and_a_degenerate_one_is_refused_while_the_champion_serves(
    host: DevHost,
):
    # given a first upload of the sample to a line with no champion yet
    put_dataset(host, "support/first.jsonl", b"".join(LINES))
    first = wait_for_state(host, run_of(host, "support/first.jsonl")["run_id"], ENDED, 420)

    # then it was evaluated against the base model on its held-out conversations and the probes, and promoted
    assert first["state"] == "deployed", (first.get("error"), first["history"][-1])
    evaluation = first["evaluation"]
    assert evaluation["baseline"] == "base" and evaluation["passed"] is True
    assert evaluation["reference"]["model"] == "tiny"
    assert evaluation["examples"] == first["validation"]["test_rows"]
    assert evaluation["challenger"]["probes"] == len(load_probes())
    assert [check["code"] for check in evaluation["checks"]] == [
        "degenerate_answers",
        "score_below_baseline",
        "forgetting",
    ]
    assert evaluation["challenger"]["scores"]["rouge_l"] > evaluation["reference"]["scores"]["rouge_l"]
    assert evaluation["challenger"]["eval_loss"] == first["metrics"]["eval_loss"]
    assert evaluation["reference"]["eval_loss"] == first["metrics"]["base_eval_loss"]
    document = json.loads(read(host, first["artifacts"]["evaluation_json"]))
    assert len(document["examples"]) == evaluation["examples"] and len(document["probes"]) == len(load_probes())
    assert document["examples"][0]["baseline"]["text"] is not None
    page = read(host, first["artifacts"]["evaluation_md"]).decode()
    assert page.startswith(f"# Evaluation: run {first['run_id']}") and "- Verdict: **passed**" in page
    endpoint, champion_deployment = first["endpoint"]["name"], first["endpoint"]["deployment"]
    assert serving(host, endpoint) == {champion_deployment: 100}, "the base model's deployment is gone"

    # when a second upload, schema-valid, answers every question with a repeated phrase
    degenerate = [(question, "Enjoy. " * 24) for question in questions_of_the_sample()]
    put_dataset(host, "support/second.jsonl", rows(degenerate, "enjoy"))
    second = wait_for_state(host, run_of(host, "support/second.jsonl")["run_id"], ENDED, 420)

    # then it was trained, registered and deployed at 0%, but its evaluation against the champion refused it
    assert second["state"] == "rolled_back", (second.get("error"), second["history"][-1])
    assert second["error"]["code"] == "degenerate_answers"
    assert second["evaluation"]["baseline"] == "champion"
    assert second["evaluation"]["reference"]["model"] == f"{first['model']['name']}:{first['model']['version']}"
    failed = {check["code"] for check in second["evaluation"]["checks"] if not check["passed"]}
    assert "degenerate_answers" in failed
    assert second["evaluation"]["challenger"]["flag_counts"]["repetition"] >= 1
    assert second["history"][-1]["reason"].startswith("evaluation: degenerate answers ")
    # the champion's loss on the challenger's split was measured by the job, like for like
    assert second["metrics"]["champion"] == f"{first['model']['name']}:{first['model']['version']}"
    assert second["metrics"]["champion_eval_loss"] is not None
    # and the champion keeps all the traffic, and answers
    assert serving(host, endpoint) == {champion_deployment: 100}
    assert ask(host, first).strip()
    status, shown = call(host, "GET", f"/api/runs/{second['run_id']}")
    assert status == 200 and shown["evaluation"]["passed"] is False


def test_a_fine_tune_that_answers_everything_with_one_sentence_is_refused_for_forgetting(host: DevHost):
    # given a champion that learned the probes' answers besides the sample (so it passes many of them)
    probes = load_probes()
    knows = [(probe.prompt, ANSWERS[probe.id][0]) for probe in probes] * 4
    put_dataset(host, "general/line.json", json.dumps({"parameters": {"num_train_epochs": 8}}).encode())
    put_dataset(host, "general/first.jsonl", b"".join(LINES) + rows(knows, "knows"))
    first = wait_for_state(host, run_of(host, "general/first.jsonl")["run_id"], ENDED, 600)
    assert first["state"] == "deployed", (first.get("error"), first["history"][-1])
    champion_rate = first["evaluation"]["challenger"]["probes_passed"] / len(probes)
    assert champion_rate >= 0.3, first["evaluation"]["challenger"]

    # when the line's next upload answers every question, the probes' too, with one sentence
    one_sentence = [(question, "I can help with that.") for question in questions_of_the_sample()]
    put_dataset(
        host, "general/second.jsonl", rows(one_sentence + [(p.prompt, "I can help with that.") for p in probes], "one")
    )
    second = wait_for_state(host, run_of(host, "general/second.jsonl")["run_id"], ENDED, 600)

    # then its evaluation refused it for forgetting: its probe pass rate fell by more than 10 points
    assert second["state"] == "rolled_back", (second.get("error"), second["history"][-1])
    assert second["error"]["code"] == "forgetting"
    checks = {check["code"]: check for check in second["evaluation"]["checks"]}
    assert checks["forgetting"]["passed"] is False
    assert checks["degenerate_answers"]["passed"] is True
    assert serving(host, first["endpoint"]["name"]) == {first["endpoint"]["deployment"]: 100}
