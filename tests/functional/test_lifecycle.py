"""Job events to a gated, deployed, smoke-tested endpoint; idle teardown and restore. Real Azurite, fake engine.

The events are the sample Azure ML payloads (tests/events), addressed to the run under test, and reach the
registered on_job_event function as the Functions host hands them over.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared.context import AppContext
from shared.domain.jobs import JobStatus
from shared.domain.runs import RunRecord, RunState
from shared.domain.tags import MANAGED_TAG
from shared.engine.profile import LOCAL_WORKSPACE_TOPIC
from shared.usecases.lifecycle.idle import teardown_idle_endpoints
from shared.usecases.lifecycle.restore import restore_endpoint
from tests.conftest import EVENTS
from tests.fakes import FakeEngine
from tests.functional.test_intake import VALID, upload
from tests.registered import function

on_dataset_uploaded = function("on_dataset_uploaded")
on_job_event = function("on_job_event")
sweep_idle_endpoints = function("sweep_idle_endpoints")

COMPLETED = json.loads((EVENTS / "aml_run_completed.json").read_text())[0]
STATUS_CHANGED = json.loads((EVENTS / "aml_run_status_changed.json").read_text())[0]


def event_for(run_id: str, template: dict = COMPLETED, **changes) -> func.EventGridEvent:
    """The sample event, re-addressed to `run_id` from the local engine's workspace."""
    body = copy.deepcopy(template)
    body["topic"] = LOCAL_WORKSPACE_TOPIC
    body["data"].update(runId=run_id, runTags={"ft-autopilot-run": run_id})
    body["subject"] = f"experiments/{body['data']['experimentId']}/runs/{run_id}"
    for key, value in changes.items():
        if key in body:
            body[key] = value
        else:
            body["data"][key] = value
    return func.EventGridEvent(
        id=body["id"],
        data=body["data"],
        topic=body["topic"],
        subject=body["subject"],
        event_type=body["eventType"],
        event_time=datetime.now(UTC),
        data_version=body["dataVersion"],
    )


def submitted_run(ctx: AppContext, name: str = "train.jsonl", data: bytes = VALID) -> RunRecord:
    on_dataset_uploaded(upload(ctx.settings, name, data))
    return next(r for r in ctx.ledger.list() if any(s.endswith("/" + name) for s in r.sources))


def trained_run(ctx: AppContext, engine: FakeEngine, **metrics) -> RunRecord:
    run = submitted_run(ctx, **{k: metrics.pop(k) for k in ("name", "data") if k in metrics})
    engine.finish_job(run.run_id, **metrics)
    return run


def delivered_until_recorded(
    ctx: AppContext, run_id: str, error: type[Exception], match: str, state_while_retried: RunState
) -> RunRecord:
    """Deliver the completion event three times (MAX_STEP_ATTEMPTS) to a step that fails each time: the first two
    failures are raised for Event Grid to redeliver, the run still in `state_while_retried`; the third is recorded
    and the handler returns normally. The run's record after the third."""
    for attempt in (1, 2):
        with pytest.raises(error, match=match):
            on_job_event(event_for(run_id))
        assert ctx.ledger.get(run_id).state == state_while_retried, attempt
    on_job_event(event_for(run_id))
    return ctx.ledger.get(run_id)


def test_run_completed_five_times_gives_one_model_version_and_one_deployment(ctx: AppContext, engine: FakeEngine):
    # given a run whose job finished with a better loss than the base model
    run = trained_run(ctx, engine)

    # when RunCompleted is delivered five times
    for _ in range(5):
        on_job_event(event_for(run.run_id))

    # then the run is deployed once, with all traffic, and its history shows each step once
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED
    assert len(engine.models[record.model.name]) == 1 and engine.deployments_created == 1
    assert engine.traffic(record.endpoint.name) == {record.endpoint.deployment: 100}
    assert [t.to_state for t in record.history][3:] == [
        RunState.TRAINED,
        RunState.REGISTERED,
        RunState.DEPLOYING,
        RunState.DEPLOYED,
    ]
    assert record.smoke_test.passed and record.smoke_test.answer == f"answer from {record.endpoint.deployment}"
    assert engine.get_model(record.model.name, alias="champion").version == record.model.version
    assert record.metrics.eval_loss == 0.8 and record.gate.passed
    assert record.artifacts.loss_curve.endswith(f"{run.run_id}/loss_curve.svg")
    container, _, name = record.artifacts.training_report.partition("/")
    assert b"| eval loss | 1.2000 | 0.8000 |" in ctx.store.read(container, name)[0]
    # the smoke test and the evaluation were pinned to the new deployment, then the evaluation asked the base
    # model's (the line has no champion yet), EVAL_BATCH_SIZE conversations a call, once for the five deliveries
    calls = -(-(record.evaluation.examples + record.evaluation.challenger.probes) // ctx.settings.eval_batch_size)
    base = "b-" + run.run_id.removeprefix("ft-")
    assert (
        engine.invocations
        == [(record.endpoint.name, record.endpoint.deployment)] * (1 + calls) + [(record.endpoint.name, base)] * calls
    )
    assert engine.base_deployments_created == 1 and base not in engine.traffic(record.endpoint.name)


def test_running_after_completed_changes_nothing(ctx: AppContext, engine: FakeEngine):
    # given a deployed run
    run = trained_run(ctx, engine)
    on_job_event(event_for(run.run_id))
    before = ctx.ledger.get(run.run_id)

    # when a late RunStatusChanged(Running) arrives
    on_job_event(event_for(run.run_id, STATUS_CHANGED, runStatus="Running"))

    # then the record is unchanged
    assert ctx.ledger.get(run.run_id) == before


def test_running_then_failed_records_the_reason(ctx: AppContext, engine: FakeEngine):
    run = submitted_run(ctx)

    on_job_event(event_for(run.run_id, STATUS_CHANGED, runStatus="running"))  # lower case, as seen in the wild
    assert ctx.ledger.get(run.run_id).state == RunState.RUNNING

    engine.finish_job(run.run_id, JobStatus.FAILED, error="CUDA out of memory")
    on_job_event(event_for(run.run_id, STATUS_CHANGED, runStatus="Failed"))

    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.FAILED
    assert record.error.code == "job_failed" and record.error.message == "CUDA out of memory"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        (
            {"topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.MachineLearningServices/workspaces/z"},
            "another workspace",
        ),
        ({"runType": "azureml.StepRun"}, "a pipeline step"),
        ({"runTags": {}}, "not this app's job"),
    ],
)
def test_events_that_are_not_ours_are_ignored(ctx: AppContext, engine: FakeEngine, changes: dict, why: str):
    run = trained_run(ctx, engine)

    on_job_event(event_for(run.run_id, **changes))

    assert ctx.ledger.get(run.run_id).state == RunState.SUBMITTED, why
    assert engine.deployments_created == 0


def test_an_event_for_an_unknown_run_is_ignored(ctx: AppContext, engine: FakeEngine):
    on_job_event(event_for("ft-000000000000"))
    assert ctx.ledger.list() == []


def test_cloud_events_are_accepted(ctx: AppContext, engine: FakeEngine):
    # given a run and the same RunCompleted in the CloudEvents schema
    run = trained_run(ctx, engine)
    grid = event_for(run.run_id)
    cloud = func.CloudEvent(
        id=grid.id,
        source=grid.topic,
        type=grid.event_type,
        specversion="1.0",
        data=grid.get_json(),
        subject=grid.subject,
        time=datetime.now(UTC),
    )

    on_job_event(cloud)

    assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYED


def test_a_model_that_does_not_beat_the_base_is_gated_out(ctx: AppContext, engine: FakeEngine):
    run = trained_run(ctx, engine, eval_loss=1.19, base_eval_loss=1.2)

    on_job_event(event_for(run.run_id))

    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.GATED_OUT
    assert not record.gate.passed and "1.1900 > 1.1760" in record.gate.reasons[0]
    assert engine.models == {} and engine.endpoints == {}


def test_a_retrain_shifts_traffic_on_the_same_endpoint_and_retires_the_old_deployment(
    ctx: AppContext, engine: FakeEngine
):
    # given a deployed first run
    first = trained_run(ctx, engine)
    on_job_event(event_for(first.run_id))
    first = ctx.ledger.get(first.run_id)

    # when a second dataset trains a better model
    second = trained_run(ctx, engine, name="more.jsonl", data=VALID + VALID.splitlines(keepends=True)[0], eval_loss=0.7)
    on_job_event(event_for(second.run_id))

    # then the same endpoint serves the new deployment only, and the new model is champion
    second = ctx.ledger.get(second.run_id)
    assert second.state == RunState.DEPLOYED
    assert second.endpoint.name == first.endpoint.name
    assert second.endpoint.previous_deployment == first.endpoint.deployment
    assert engine.traffic(first.endpoint.name) == {second.endpoint.deployment: 100}
    assert engine.get_model(second.model.name, alias="champion").version == "2"


def test_a_failed_smoke_test_rolls_back_and_the_previous_deployment_keeps_serving(ctx: AppContext, engine: FakeEngine):
    # given a deployed first run, and a second whose deployment will answer nothing
    first = trained_run(ctx, engine)
    on_job_event(event_for(first.run_id))
    first = ctx.ledger.get(first.run_id)
    second = trained_run(ctx, engine, name="more.jsonl", data=VALID + VALID.splitlines(keepends=True)[0], eval_loss=0.7)
    engine.silent_deployments.add("d-" + second.run_id.removeprefix("ft-"))

    # when the second job completes
    on_job_event(event_for(second.run_id))

    # then it is rolled back: its deployment is gone and all traffic stays on the first
    second = ctx.ledger.get(second.run_id)
    assert second.state == RunState.ROLLED_BACK
    assert second.error.code == "smoke_test_failed"
    assert "empty text" in second.smoke_test.error
    assert engine.traffic(first.endpoint.name) == {first.endpoint.deployment: 100}
    assert engine.get_model(first.model.name, alias="champion").version == first.model.version


def test_an_engine_error_during_deploy_is_retried_then_recorded(ctx: AppContext, engine: FakeEngine):
    # given deployments that fail with a transient error three times (MAX_STEP_ATTEMPTS is 3)
    run = trained_run(ctx, engine)
    engine.fail_next_deployments = 3

    # when the event is delivered, the handler raises so Event Grid redelivers, twice, the run still registered
    record = delivered_until_recorded(ctx, run.run_id, Exception, "quota exceeded", RunState.REGISTERED)

    # then on the third failure the run is recorded failed, and the handler returns normally
    assert record.state == RunState.FAILED
    assert [(a.stage, a.operation, a.code) for a in record.attempts] == [
        ("deploy", "create_deployment", "engine_error")
    ] * 3
    assert record.error.message == "quota exceeded for the instance type (fake)"
    assert record.history[-1].reason == "deploy failed: create_deployment: engine_error"


def test_a_transient_deploy_error_then_success_deploys(ctx: AppContext, engine: FakeEngine):
    run = trained_run(ctx, engine)
    engine.fail_next_deployments = 1

    with pytest.raises(Exception, match="quota exceeded"):
        on_job_event(event_for(run.run_id))
    on_job_event(event_for(run.run_id))

    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.DEPLOYED
    assert engine.deployments_created == 1
    # the failure stays on the run as history, resolved by the success that followed
    assert [(a.operation, a.resolved_at is not None) for a in record.attempts] == [("create_deployment", True)]


def deployed_run(ctx: AppContext, engine: FakeEngine) -> RunRecord:
    run = trained_run(ctx, engine)
    on_job_event(event_for(run.run_id))
    return ctx.ledger.get(run.run_id)


def later(ctx: AppContext, minutes: float) -> None:
    now = datetime.now(UTC) + timedelta(minutes=minutes)
    ctx.now = lambda: now


def test_the_sweep_tears_down_idle_managed_endpoints_only_and_restore_brings_them_back(
    ctx: AppContext, engine: FakeEngine
):
    # given a deployed run and an endpoint this app does not manage
    run = deployed_run(ctx, engine)
    engine.create_or_update_endpoint("someone-elses", {"team": "search"})

    # when the sweep runs inside the grace period, nothing is torn down
    later(ctx, 20)
    sweep_idle_endpoints(TimerRequest(past_due=False))
    assert run.endpoint.name in engine.endpoints

    # when it runs after IDLE_MINUTES without requests
    later(ctx, 90)
    sweep_idle_endpoints(TimerRequest(past_due=False))

    # then the managed endpoint is gone, the other one stays, and the run remembers what to restore
    assert set(engine.endpoints) == {"someone-elses"}
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.TORN_DOWN
    assert record.model == run.model and record.endpoint.name == run.endpoint.name

    # when the endpoint is restored
    restored = restore_endpoint(ctx, run.endpoint.name)

    # then the champion serves again on the same endpoint name
    assert restored.state == RunState.DEPLOYED
    assert engine.traffic(run.endpoint.name) == {run.endpoint.deployment: 100}
    assert engine.endpoints[run.endpoint.name].tags[MANAGED_TAG] == "true"
    assert [t.to_state for t in restored.history][-3:] == [RunState.TORN_DOWN, RunState.DEPLOYING, RunState.DEPLOYED]


def test_a_recently_used_endpoint_is_kept(ctx: AppContext, engine: FakeEngine):
    run = deployed_run(ctx, engine)
    later(ctx, 90)
    engine.endpoints[run.endpoint.name] = engine.endpoints[run.endpoint.name].__class__(
        **{**engine.endpoints[run.endpoint.name].__dict__, "last_request_at": ctx.now() - timedelta(minutes=5)}
    )

    sweep_idle_endpoints(TimerRequest(past_due=False))

    assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYED


def test_the_sweep_reconciles_a_run_whose_completion_event_was_lost(ctx: AppContext, engine: FakeEngine):
    # given a job that completed, but whose events never arrived
    run = trained_run(ctx, engine)

    # when the sweep runs
    sweep_idle_endpoints(TimerRequest(past_due=True))

    # then the run was carried through to deployment
    assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYED


def test_an_endpoint_with_a_deployment_in_progress_is_not_torn_down(ctx: AppContext, engine: FakeEngine):
    # given an idle deployed endpoint, and a second run whose deployment to it is under way (its first try failed)
    first = deployed_run(ctx, engine)
    second = trained_run(ctx, engine, name="more.jsonl", data=VALID + VALID.splitlines(keepends=True)[0])
    engine.fail_next_deployments = 1
    with pytest.raises(Exception, match="quota exceeded"):
        on_job_event(event_for(second.run_id))
    assert ctx.ledger.get(second.run_id).state == RunState.REGISTERED

    # when the idle teardown runs long after the last request
    later(ctx, 90)
    torn_down = teardown_idle_endpoints(ctx)

    # then the endpoint stays
    assert torn_down == []
    assert first.endpoint.name in engine.endpoints
    assert ctx.ledger.get(first.run_id).state == RunState.DEPLOYED


def test_a_deployment_stuck_provisioning_past_the_deadline_is_rolled_back(ctx: AppContext, engine: FakeEngine):
    # given a run whose deployment never leaves Creating
    run = trained_run(ctx, engine)
    engine.deployment_states["d-" + run.run_id.removeprefix("ft-")] = "Creating"
    on_job_event(event_for(run.run_id))
    assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYING

    # when the sweep looks before DEPLOY_TIMEOUT_MINUTES (120) have passed, the run keeps waiting
    later(ctx, 100)
    sweep_idle_endpoints(TimerRequest(past_due=False))
    assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYING

    # when it looks after the deadline
    later(ctx, 130)
    sweep_idle_endpoints(TimerRequest(past_due=False))

    # then the deployment is deleted and the run rolled back, saying why
    record = ctx.ledger.get(run.run_id)
    assert record.state == RunState.ROLLED_BACK
    assert record.error.code == "deployment_timeout"
    assert record.error.message.startswith(f"deployment {record.endpoint.deployment} is still Creating after 13")
    assert "(DEPLOY_TIMEOUT_MINUTES)" in record.error.message
    assert record.endpoint.deployment not in engine.deployments.get(record.endpoint.name, {})
