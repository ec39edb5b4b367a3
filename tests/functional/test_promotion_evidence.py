"""The evaluation's evidence around the fake engine (its answers chosen per deployment) and real Azurite: the optional
AI-assisted judge over a loopback stand-in of Azure OpenAI, as evidence and as a gate; the smoke test's
degeneration checks; a redelivered completion that does not evaluate twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from pydantic import SecretStr

from shared.adapters.azurite import Azurite
from shared.context import AppContext
from shared.domain.runs import RunState
from shared.domain.scoring import smoke_test_conversation
from shared.settings import Settings
from tests.conftest import settings_for
from tests.fakes import FakeEngine
from tests.functional.test_endpoint_races import answers_like_the_sample, deployment_of, variant
from tests.functional.test_lifecycle import event_for, trained_run
from tests.registered import function
from tests.standins.azure_openai import AzureOpenAIStandIn

on_job_event = function("on_job_event")
KEY = "judge-key-not-to-be-seen"


@pytest.fixture
def standin() -> Iterator[AzureOpenAIStandIn]:
    with AzureOpenAIStandIn(deployment="judge", api_key=KEY) as running:
        yield running


@pytest.fixture
def settings(azurite: Azurite, tmp_path: Path, standin: AzureOpenAIStandIn, request: pytest.FixtureRequest) -> Settings:
    """The conftest's settings, with the judge on the stand-in (gating when the test's parameter says so)."""
    return settings_for(
        azurite,
        tmp_path,
        azure_openai_endpoint=standin.endpoint,
        azure_openai_deployment="judge",
        azure_openai_api_key=SecretStr(KEY),
        eval_judge_gates=getattr(request, "param", False),
        eval_max_examples=6,
        eval_probes=False,
    )


def blob(ctx: AppContext, path: str) -> bytes:
    container, _, name = path.partition("/")
    service = BlobServiceClient.from_connection_string(ctx.settings.storage_connection_string.get_secret_value())
    return service.get_blob_client(container, name).download_blob().readall()


def test_the_judge_adds_its_scores_to_the_evidence_and_never_the_key(
    ctx: AppContext, engine: FakeEngine, standin: AzureOpenAIStandIn
):
    # given a trained run whose deployment answers like the sample's references
    run = trained_run(ctx, engine, eval_loss=0.8)
    engine.answer_with[deployment_of(run)] = answers_like_the_sample

    # when its completion is delivered
    on_job_event(event_for(run.run_id))

    # then the judge scored both sides (the challenger and the base model), its means are in the summary, each answer
    # carries its scores in evaluation.json, and the key is in neither
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED, record.history[-1].reason
    evaluation = record.evaluation
    assert evaluation.judge_model == "judge"
    assert evaluation.challenger.judge["similarity"] > evaluation.reference.judge["similarity"]
    assert set(evaluation.challenger.judge) == {"similarity", "coherence", "fluency"}
    document = json.loads(blob(ctx, record.artifacts.evaluation_json))
    assert all(set(e["challenger"]["judge"]) == {"similarity", "coherence", "fluency"} for e in document["examples"])
    assert len([r for r in standin.requests if r.status == 200]) == 3 * 2 * evaluation.examples
    assert KEY not in record.model_dump_json() and KEY.encode() not in blob(ctx, record.artifacts.evaluation_json)
    assert "judge" in blob(ctx, record.artifacts.evaluation_md).decode()


@pytest.mark.parametrize("settings", [True], indirect=True)
def test_when_the_judge_gates_a_challenger_it_scores_lower_is_refused(ctx: AppContext, engine: FakeEngine):
    # given a champion that answers like the references
    first = trained_run(ctx, engine, name="first.jsonl", data=variant(1), eval_loss=0.8)
    engine.answer_with[deployment_of(first)] = answers_like_the_sample
    on_job_event(event_for(first.run_id))
    assert ctx.ledger.get(first.run_id).state == RunState.DEPLOYED

    # when a newer challenger answers every question with something unrelated
    second = trained_run(ctx, engine, name="second.jsonl", data=variant(2), eval_loss=0.8)
    engine.answer_with[deployment_of(second)] = lambda conversation: "Bananas grow in warm places."
    on_job_event(event_for(second.run_id))

    # then its evaluation refuses it, the judge's check among the reasons, and the champion keeps the traffic
    record = ctx.ledger.get(second.run_id)
    assert record.state == RunState.ROLLED_BACK
    judged = next(check for check in record.evaluation.checks if check.code == "judge_below_baseline")
    assert judged.passed is False
    assert judged.reason.startswith("AI-judged similarity ")
    assert record.evaluation.challenger.judge["similarity"] < record.evaluation.reference.judge["similarity"] - 0.25
    assert engine.traffic(record.endpoint.name) == {deployment_of(first): 100}


def test_a_smoke_test_answer_that_loops_is_degenerate_and_rolls_back(ctx: AppContext, engine: FakeEngine):
    # given a trained run whose deployment answers with one phrase over and over
    run = trained_run(ctx, engine, eval_loss=0.8)
    engine.answer_with[deployment_of(run)] = lambda conversation: "Enjoy. " * 30

    # when its completion is delivered
    on_job_event(event_for(run.run_id))

    # then the smoke test flags it; the evaluation still gathers the evidence, which refuses it
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.ROLLED_BACK
    assert record.smoke_test.passed is False
    assert record.smoke_test.error.startswith("the answer is degenerate (repetition)")
    assert record.error.code == "degenerate_answers"
    assert record.evaluation.challenger.flag_counts["repetition"] == record.evaluation.examples


def test_a_degenerate_smoke_test_answer_fails_the_run_even_when_the_evaluation_passes(
    ctx: AppContext, engine: FakeEngine
):
    # given a deployment that answers well, except the smoke test's question, with a loop
    run = trained_run(ctx, engine, eval_loss=0.8)
    smoke_conversation = smoke_test_conversation(json.loads(blob(ctx, run.artifacts.test).splitlines()[0]))

    def answers(conversation: list[dict[str, str]]) -> str:
        return "Enjoy. " * 30 if conversation == smoke_conversation else answers_like_the_sample(conversation)

    engine.answer_with[deployment_of(run)] = answers

    # when its completion is delivered
    on_job_event(event_for(run.run_id))

    # then the run is rolled back for its smoke test, with its evaluation recorded
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.ROLLED_BACK
    assert record.error.code == "smoke_test_failed"
    assert record.evaluation is not None


def test_a_redelivered_completion_reuses_the_recorded_evaluation(ctx: AppContext, engine: FakeEngine):
    # given a run whose deployment stays provisioning after its evaluation was recorded... simulated by delivering
    # the completion twice to a run that deploys: the first delivery evaluates and promotes
    run = trained_run(ctx, engine, eval_loss=0.8)
    on_job_event(event_for(run.run_id))
    asked = len(engine.invocations)

    # when the completion is delivered again
    on_job_event(event_for(run.run_id))

    # then nothing is asked again: the run is deployed, its evaluation as it was
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED
    assert len(engine.invocations) == asked


def test_a_delivery_that_finds_the_evaluation_under_way_leaves_it_be(ctx: AppContext, engine: FakeEngine):
    # given a run deploying while another delivery (here: the test) holds its evaluation lease
    run = trained_run(ctx, engine, eval_loss=0.8)
    engine.deployment_states[deployment_of(run)] = "Creating"
    on_job_event(event_for(run.run_id))
    engine.deployment_states[deployment_of(run)] = "Succeeded"

    # when the completion (or the sweep) drives it meanwhile
    with ctx.evaluating(run.run_id):
        on_job_event(event_for(run.run_id))
        during = ctx.ledger.get(run.run_id)
        asked = list(engine.invocations)

    # then it asked nothing and changed nothing; once the lease is free, a delivery completes it
    assert during.state == RunState.DEPLOYING and asked == []
    on_job_event(event_for(run.run_id))
    assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYED
