"""Runs that finish together on one endpoint, and a late run from an older upload. Real Azurite (the ledger and the
endpoint leases), the fake engine (the interleavings and the losses must be chosen, which a real training cannot)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from shared.adapters.leases import EndpointBusy
from shared.context import AppContext
from shared.domain.runs import RunRecord, RunState
from tests.fakes import FakeEngine
from tests.functional.test_intake import VALID
from tests.functional.test_lifecycle import event_for, trained_run
from tests.registered import function

on_job_event = function("on_job_event")
LINES = VALID.splitlines(keepends=True)


def variant(n: int) -> bytes:
    """Another content (so another run) of the same valid sample."""
    return b"".join(LINES[n:] + LINES[:n])


def older_and_newer(ctx: AppContext, engine: FakeEngine, *, old_loss: float, new_loss: float):
    """Two trained runs of the same base model (one endpoint), uploaded a second apart: the first is older."""
    old = trained_run(ctx, engine, name="old.jsonl", data=variant(1), eval_loss=old_loss)
    time.sleep(1.1)  # blob times have a resolution of one second
    new = trained_run(ctx, engine, name="new.jsonl", data=variant(2), eval_loss=new_loss)
    assert old.order < new.order
    return old, new


def deployment_of(run: RunRecord) -> str:
    return "d-" + run.run_id.removeprefix("ft-")


def answers_like_the_sample(conversation: list[dict[str, str]]) -> str:
    """A deployment that answers each sample question with the sample's answer: a challenger that beats one
    answering "answer from d-..." on the held-out conversations."""
    return SAMPLE_ANSWERS.get(conversation[-1]["content"], "")


SAMPLE_ANSWERS = {
    row["messages"][-2]["content"]: row["messages"][-1]["content"] for row in map(json.loads, VALID.splitlines())
}


def test_a_shift_leaves_a_deploying_runs_deployment_alone_and_the_newer_run_wins(ctx: AppContext, engine: FakeEngine):
    # given an older and a newer run; the newer one's deployment is still provisioning
    old, new = older_and_newer(ctx, engine, old_loss=0.8, new_loss=0.8)
    engine.deployment_states[deployment_of(new)] = "Creating"
    on_job_event(event_for(new.run_id))
    assert ctx.ledger.get(new.run_id).state == RunState.DEPLOYING

    # when the older run finishes and shifts the traffic to itself
    on_job_event(event_for(old.run_id))
    endpoint = ctx.ledger.get(old.run_id).endpoint.name

    # then the newer run's deployment is still there, at 0%
    assert ctx.ledger.get(old.run_id).state == RunState.DEPLOYED
    assert engine.traffic(endpoint) == {deployment_of(old): 100, deployment_of(new): 0}

    # when the newer deployment is ready and its run goes on
    engine.deployment_states[deployment_of(new)] = "Succeeded"
    on_job_event(event_for(new.run_id))

    # then it has all the traffic alone, and the older run says it was replaced, by whom
    assert ctx.ledger.get(new.run_id).state == RunState.DEPLOYED
    assert engine.traffic(endpoint) == {deployment_of(new): 100}
    replaced = ctx.ledger.get(old.run_id)
    assert replaced.state == RunState.SUPERSEDED
    assert replaced.history[-1].reason == (
        f"replaced by run {new.run_id} on {endpoint}: deployment {deployment_of(old)} retired"
    )
    assert engine.get_model(replaced.model.name, alias="champion").version == ctx.ledger.get(new.run_id).model.version


def test_an_older_run_that_deployed_while_a_newer_one_was_promoted_is_superseded_unless_it_beats_it(
    ctx: AppContext, engine: FakeEngine
):
    # given an older run deploying (its deployment provisioning) when the newer run is promoted with the same loss
    old, new = older_and_newer(ctx, engine, old_loss=0.8, new_loss=0.8)
    engine.deployment_states[deployment_of(old)] = "Creating"
    on_job_event(event_for(old.run_id))
    on_job_event(event_for(new.run_id))
    endpoint = ctx.ledger.get(new.run_id).endpoint.name
    assert ctx.ledger.get(new.run_id).state == RunState.DEPLOYED

    # when the older deployment is ready and its run goes on
    engine.deployment_states[deployment_of(old)] = "Succeeded"
    on_job_event(event_for(old.run_id))

    # then the newer champion keeps the traffic; the older run is superseded, its deployment deleted, and it says why
    late = ctx.ledger.get(old.run_id)
    assert late.state == RunState.SUPERSEDED
    assert engine.traffic(endpoint) == {deployment_of(new): 100}
    promoted = ctx.ledger.get(new.run_id).model
    champion = f"{promoted.name}:{promoted.version}"
    assert late.history[-1].reason == (
        f"a newer champion was promoted while this run deployed: champion {champion} is from a newer upload and this "
        f"run was evaluated against base {late.base_model}: an older run must beat it; deployment "
        f"{deployment_of(old)} deleted"
    )


def test_a_late_older_run_that_only_ties_the_newer_champion_is_refused_by_its_evaluation(
    ctx: AppContext, engine: FakeEngine
):
    # given a newer run promoted first, and an older run whose completion arrives late
    old, new = older_and_newer(ctx, engine, old_loss=0.80, new_loss=0.80)
    on_job_event(event_for(new.run_id))
    promoted = ctx.ledger.get(new.run_id)

    # when the older run completes and its deployment answers as well as the champion's, no better
    on_job_event(event_for(old.run_id))

    # then its evaluation against the newer champion refuses it, saying an older run must beat it; the traffic stays
    late = ctx.ledger.get(old.run_id)
    assert late.state == RunState.ROLLED_BACK
    assert late.error.code == "score_below_baseline"
    score = next(check for check in late.evaluation.checks if check.code == "score_below_baseline")
    assert score.reason.endswith(
        f"of champion {promoted.model.name}:{promoted.model.version}, which is from a newer upload: an older run "
        "must beat it"
    )
    assert engine.traffic(promoted.endpoint.name) == {promoted.endpoint.deployment: 100}


def test_a_late_older_run_that_beats_the_newer_champion_is_promoted(ctx: AppContext, engine: FakeEngine):
    # given a newer run promoted first, and an older run whose deployment answers like the sample's references
    old, new = older_and_newer(ctx, engine, old_loss=0.80, new_loss=0.80)
    on_job_event(event_for(new.run_id))
    engine.answer_with[deployment_of(old)] = answers_like_the_sample

    # when the older run completes
    on_job_event(event_for(old.run_id))

    # then it won the comparison on the held-out conversations: it serves, and the newer run is replaced
    late, replaced = ctx.ledger.get(old.run_id), ctx.ledger.get(new.run_id)
    assert late.state == RunState.DEPLOYED, late.history[-1].reason
    assert late.evaluation.challenger.scores["rouge_l"] > 0.9 > late.evaluation.reference.scores["rouge_l"]
    assert late.evaluation.passed is True
    assert engine.traffic(late.endpoint.name) == {deployment_of(old): 100}
    assert replaced.state == RunState.SUPERSEDED


def test_two_runs_finishing_at_once_leave_one_deployment_with_all_traffic(ctx: AppContext, engine: FakeEngine):
    # given two runs of one endpoint whose smoke tests take a moment
    old, new = older_and_newer(ctx, engine, old_loss=0.8, new_loss=0.8)
    for run in (old, new):
        engine.answer_seconds[deployment_of(run)] = 0.5

    # when both completions are delivered at the same time, twice each
    errors: list[BaseException] = []

    def deliver(run_id: str) -> None:
        for _ in range(2):
            try:
                on_job_event(event_for(run_id))
                return
            except EndpointBusy as exc:  # redelivered by the platform
                errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(run.run_id,)) for run in (old, new, old, new)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then exactly one deployment serves, at 100%, the newer run's; the older run says why it does not
    records = {run.run_id: ctx.ledger.get(run.run_id) for run in (old, new)}
    endpoint = records[new.run_id].endpoint.name
    assert engine.traffic(endpoint) == {deployment_of(new): 100}
    assert records[new.run_id].state == RunState.DEPLOYED
    loser = records[old.run_id]
    assert loser.state in (RunState.SUPERSEDED, RunState.ROLLED_BACK)
    champion = f"{records[new.run_id].model.name}:{records[new.run_id].model.version}"
    assert loser.history[-1].reason in {
        # the older run shifted first, then the newer one replaced it
        f"replaced by run {new.run_id} on {endpoint}: deployment {deployment_of(old)} retired",
        # the newer run shifted first, and the older one did not beat it
        f"a newer champion was promoted while this run deployed: champion {champion} is from a newer upload and "
        f"this run was evaluated against base {loser.base_model}: an older run must beat it; deployment "
        f"{deployment_of(old)} deleted",
        # the newer run shifted first, and the older one, evaluated against it, did not beat it
        f"evaluation: {_score_reason(loser)}; traffic stays on {deployment_of(new)}",
    }
    assert errors == []


def _score_reason(run: RunRecord) -> str:
    checks = run.evaluation.failed if run.evaluation else []
    return "; ".join(check.reason for check in checks)


def test_one_holder_of_an_endpoints_lease_at_a_time(ctx: AppContext):
    # given a change holding the endpoint's lease
    with ctx.changing_endpoint("ep-x"):
        # when another change asks without waiting, then it is told the endpoint is busy (transient: retried)
        with pytest.raises(EndpointBusy) as busy, ctx.changing_endpoint("ep-x", wait_s=0):
            pass
        assert busy.value.transient and busy.value.code == "endpoint_busy"
        # and another endpoint is not held by it
        with ctx.changing_endpoint("ep-y", wait_s=0):
            pass

    # when the first change ends, then the lease is free again
    with ctx.changing_endpoint("ep-x", wait_s=0):
        pass


def test_a_waiting_change_gets_the_lease_when_the_holder_ends(ctx: AppContext):
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with ctx.changing_endpoint("ep-z"):
            held.set()
            time.sleep(1.0)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait()
    with ctx.changing_endpoint("ep-z", wait_s=10):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
