"""Retries that fit slow engine operations: each operation's transient failures count since its last success, a
deployment that is still provisioning is not failing, and the smoke test's timeout is the engine's invoke timeout.
Real Azurite, the fake engine; the events reach the registered on_job_event function.
"""

from __future__ import annotations

import pytest

from shared.context import AppContext
from shared.domain.errors import EngineError
from shared.domain.naming import deployment_name_for
from shared.domain.runs import RunRecord, RunState
from tests.fakes import FakeEngine
from tests.functional.test_lifecycle import delivered_until_recorded, event_for, on_job_event, trained_run


def provisioning_run(ctx: AppContext, engine: FakeEngine) -> RunRecord:
    """A run deploying to a deployment that Azure ML is still provisioning (as it does for ten minutes or more)."""
    run = trained_run(ctx, engine)
    engine.deployment_states[deployment_name_for(run.run_id)] = "Creating"
    on_job_event(event_for(run.run_id))
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYING and record.attempts == []
    return record


def run_answering_in(ctx: AppContext, engine: FakeEngine, answer_s: float) -> RunRecord:
    """A trained run under a smoke-test timeout of 1 s, whose deployment will take `answer_s` seconds to answer."""
    ctx.settings = ctx.settings.model_copy(update={"smoke_test_timeout_s": 1.0})
    run = trained_run(ctx, engine)
    engine.answer_seconds[deployment_name_for(run.run_id)] = answer_s
    return run


def test_polls_of_a_provisioning_deployment_are_not_failures_and_write_nothing(ctx: AppContext, engine: FakeEngine):
    # given a run whose deployment is still provisioning
    run = provisioning_run(ctx, engine)

    # when the event is delivered again, more times than MAX_STEP_ATTEMPTS (3)
    for _ in range(5):
        on_job_event(event_for(run.run_id))

    # then the run is still deploying, no attempt was noted and the record was not even rewritten
    assert ctx.ledger.get(run.run_id) == run


def test_throttled_polls_separated_by_answers_never_fail_the_run(ctx: AppContext, engine: FakeEngine):
    # given a run whose deployment is still provisioning
    run = provisioning_run(ctx, engine)

    # when three polls are throttled, each followed by one that answers "Creating"
    for throttled in (1, 2, 3):
        engine.throttled["get_deployment"] = 1
        with pytest.raises(EngineError, match="too many requests"):
            on_job_event(event_for(run.run_id))
        on_job_event(event_for(run.run_id))
        assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYING, throttled

    # and the deployment then comes up
    engine.deployment_states[deployment_name_for(run.run_id)] = "Succeeded"
    on_job_event(event_for(run.run_id))

    # then the run is deployed, and each throttled poll is kept on it, resolved by the answer that followed
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED
    assert [(a.stage, a.operation, a.code) for a in record.attempts] == [("deploy", "get_deployment", "throttled")] * 3
    assert all(a.resolved_at is not None for a in record.attempts)
    assert engine.deployments_created == 1


def test_max_step_attempts_failures_in_a_row_of_one_operation_fail_the_run(ctx: AppContext, engine: FakeEngine):
    # given a run whose deployment is still provisioning, and polls that will be throttled three times in a row
    run = provisioning_run(ctx, engine)
    engine.throttled["get_deployment"] = 3

    # when the event is delivered, the first two failures are raised for redelivery, the run still deploying
    record = delivered_until_recorded(ctx, run.run_id, EngineError, "too many requests", RunState.DEPLOYING)

    # then the third fails the run, the handler returning normally
    assert record.state == RunState.FAILED
    assert record.error.code == "throttled"
    assert record.error.message == "get_deployment: too many requests, retry later (fake)"
    assert record.history[-1].reason == "deploy failed: get_deployment: throttled"
    assert [(a.operation, a.resolved_at) for a in record.attempts] == [("get_deployment", None)] * 3


def test_the_failures_of_one_operation_do_not_count_against_another_of_the_same_stage(
    ctx: AppContext, engine: FakeEngine
):
    # given a trained run whose deploy stage will see five transient failures, none three in a row of one operation:
    # the endpoint create once, the deployment create twice, then the provisioning poll twice
    run = trained_run(ctx, engine)
    engine.throttled["create_or_update_endpoint"] = 1
    engine.fail_next_deployments = 2
    engine.throttled["get_deployment"] = 2

    # when the event is redelivered after each failure
    for attempt in range(1, 6):
        with pytest.raises(EngineError):
            on_job_event(event_for(run.run_id))
        assert ctx.ledger.get(run.run_id).state in (RunState.REGISTERED, RunState.DEPLOYING), attempt
    on_job_event(event_for(run.run_id))

    # then the run is deployed, with every failure on record under its own operation
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED
    assert [(a.stage, a.operation) for a in record.attempts] == [
        ("deploy", "create_endpoint"),
        ("deploy", "create_deployment"),
        ("deploy", "create_deployment"),
        ("deploy", "get_deployment"),
        ("deploy", "get_deployment"),
    ]
    assert all(a.resolved_at is not None for a in record.attempts)
    assert engine.deployments_created == 1


def test_a_permanent_error_still_fails_the_run_at_once(ctx: AppContext, engine: FakeEngine):
    # given a completed job whose metrics the engine says it will never have
    run = trained_run(ctx, engine)
    del engine.metrics[run.run_id]

    # when the event is delivered
    on_job_event(event_for(run.run_id))

    # then the run failed on the first try, without a redelivery
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.FAILED
    assert [(a.stage, a.operation, a.code) for a in record.attempts] == [("review", "job_metrics", "metrics_not_ready")]
    assert record.history[-1].reason == "review failed: job_metrics: metrics_not_ready"


def test_duplicated_deliveries_after_recovered_failures_repeat_nothing(ctx: AppContext, engine: FakeEngine):
    # given a run deployed after a throttled traffic shift
    run = trained_run(ctx, engine)
    engine.throttled["set_traffic"] = 1
    with pytest.raises(EngineError, match="too many requests"):
        on_job_event(event_for(run.run_id))
    on_job_event(event_for(run.run_id))
    deployed = ctx.ledger.get(run.run_id)
    assert deployed.state == RunState.DEPLOYED
    invocations = list(engine.invocations)

    # when the completion event is delivered three more times
    for _ in range(3):
        on_job_event(event_for(run.run_id))

    # then nothing is repeated: the same record, one deployment, no further smoke test
    assert ctx.ledger.get(run.run_id) == deployed
    assert engine.deployments_created == 1
    assert engine.invocations == invocations
    assert [(a.stage, a.operation, a.resolved_at is not None) for a in deployed.attempts] == [
        ("shift", "set_traffic", True)
    ]


def test_the_smoke_test_times_out_through_the_engines_invoke_timeout(ctx: AppContext, engine: FakeEngine):
    # given a smoke-test timeout of 1 s and a deployment that takes 30 s to answer
    run = run_answering_in(ctx, engine, 30.0)

    # when the job completes
    on_job_event(event_for(run.run_id))

    # then the engine gave up after the timeout, and the run is rolled back with the reason
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.ROLLED_BACK
    assert record.smoke_test.passed is False
    assert record.smoke_test.error == "no answer within 1 s"
    assert 1.0 <= record.smoke_test.seconds < 5.0
    assert record.error.code == "smoke_test_failed" and record.error.message == "no answer within 1 s"
    assert deployment_name_for(run.run_id) not in engine.deployments[record.endpoint.name]


def test_an_answer_within_the_timeout_passes_the_smoke_test(ctx: AppContext, engine: FakeEngine):
    # given a deployment that answers in 0.2 s, under the 1 s timeout
    run = run_answering_in(ctx, engine, 0.2)

    # when the job completes
    on_job_event(event_for(run.run_id))

    # then it is deployed
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED
    assert record.smoke_test.passed and 0.2 <= record.smoke_test.seconds < 1.0
