"""The app's triggers driving the Azure ML adapter: real Azurite and function handlers, the recording fake of the
Azure ML service (tests/engine/azureml_fake.py) behind the adapter.

What is checked is the adapter's call sequence against the service, as the lifecycle drives it: one submission for
duplicated deliveries, get-or-create registration, a deployment begun at 0% and followed by the sweep until it has
provisioned, the smoke test pinned to it, all traffic to it, the previous deployment deleted; rollback on a failed
smoke test or a failed deployment; teardown of idle managed endpoints only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.functions.timer import TimerRequest

from shared.context import AppContext
from shared.engine.azureml.engine import AzureMLEngine
from shared.engine.base import MANAGED_TAG, JobStatus
from shared.errors import EngineError
from shared.lifecycle import cancel_run
from shared.runs import RunRecord, RunState
from shared.settings import Settings
from tests.engine.azureml_fake import BASE_MODEL_ID, RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, WORKSPACE_ID, FakeAzureML
from tests.engine.test_azureml_engine_contract import adapter_over
from tests.functional.test_intake import VALID, upload
from tests.functional.test_lifecycle import COMPLETED, submitted_run
from tests.registered import function

on_dataset_uploaded = function("on_dataset_uploaded")
on_job_event = function("on_job_event")
sweep_idle_endpoints = function("sweep_idle_endpoints")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "engine": "azureml",
            "base_model_id": BASE_MODEL_ID,
            "azure_subscription_id": SUBSCRIPTION,
            "azure_resource_group": RESOURCE_GROUP,
            "azureml_workspace_name": WORKSPACE,
            "reconcile_after_minutes": 0,  # each sweep looks at a provisioning deployment again
        }
    )


@pytest.fixture
def service() -> Iterator[FakeAzureML]:
    service = FakeAzureML()
    yield service
    service.close()


@pytest.fixture
def engine(service: FakeAzureML, settings: Settings) -> AzureMLEngine:
    return adapter_over(service, datasets_container=settings.datasets_container, compute="gpu-a100")


def job_finished(run_id: str) -> func.EventGridEvent:
    """Azure ML's RunCompleted for the run's pipeline job, from the configured workspace."""
    body = copy.deepcopy(COMPLETED)
    body["data"].update(runId=run_id, runTags={"ft-autopilot-run": run_id})
    return func.EventGridEvent(
        id=f"{run_id}-completed",
        data=body["data"],
        topic=WORKSPACE_ID,
        subject=f"experiments/{body['data']['experimentId']}/runs/{run_id}",
        event_type=body["eventType"],
        event_time=datetime.now(UTC),
        data_version=body["dataVersion"],
    )


def sweep() -> None:
    sweep_idle_endpoints(TimerRequest(past_due=False))


def trained_run(ctx: AppContext, service: FakeAzureML, name: str = "train.jsonl", data: bytes = VALID) -> RunRecord:
    record = submitted_run(ctx, name, data)
    service.workspace.jobs.jobs[record.run_id].status = "Completed"
    return record


def deployed_run(ctx: AppContext, service: FakeAzureML, name: str, data: bytes) -> RunRecord:
    record = trained_run(ctx, service, name, data)
    on_job_event(job_finished(record.run_id))
    sweep()
    return ctx.ledger.get(record.run_id)


def test_duplicated_deliveries_submit_one_pipeline_job_with_the_models_defaults(ctx: AppContext, service):
    # given a dataset delivered three times
    for _ in range(3):
        on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    # then one job was created, after looking for it first
    (record,) = ctx.ledger.list()
    assert record.state == RunState.SUBMITTED and record.job_name == record.run_id
    assert service.count("jobs.create_or_update") == 1
    assert service.calls.index(("jobs.get", record.run_id)) < service.calls.index(
        ("jobs.create_or_update", record.run_id)
    )
    # and Phi-3's model_specific_defaults went over the app's defaults, as in the notebook
    (node,) = service.workspace.jobs.bodies[record.run_id]["properties"]["jobs"].values()
    assert node["inputs"]["num_train_epochs"]["value"] == "1"
    assert node["inputs"]["precision"]["value"] == "16"
    assert node["inputs"]["compute_finetune"]["value"] == "gpu-a100"
    assert node["inputs"]["train_file_path"]["uri"] == (
        f"azureml://datastores/ftautopilot/paths/prepared/{record.run_id}/train.jsonl"
    )


def test_a_finished_job_is_registered_deployed_at_zero_then_shifted_once_it_provisions(ctx: AppContext, service):
    # given a trained run
    record = trained_run(ctx, service)

    # when the job's completion event arrives
    on_job_event(job_finished(record.run_id))

    # then the model is registered once from the job's output, and a deployment is provisioning at 0%
    run = ctx.ledger.get(record.run_id)
    assert run.state == RunState.DEPLOYING
    assert service.count("models.create_or_update") == 1
    (model,) = service.workspace.models.models.values()
    assert model.path == f"azureml://jobs/{record.run_id}/outputs/trained_model" and model.type == "mlflow_model"
    deployment = service.workspace.online_deployments.of(run.endpoint.name)[run.endpoint.deployment]
    assert deployment.instance_type == "Standard_NC6s_v3" and deployment.instance_count == 1
    assert deployment.liveness_probe.initial_delay == 600
    assert deployment.request_settings.request_timeout_ms == 90000
    assert service.workspace.online_endpoints.endpoints[run.endpoint.name].traffic == {}  # 0% is not stored
    assert service.workspace.online_endpoints.endpoints[run.endpoint.name].auth_mode == "key"
    assert service.scoring.requests == {}, "no smoke test before the deployment is ready"

    # when the sweep looks again, after the deployment has provisioned
    sweep()

    # then it was smoke-tested pinned to the new deployment, and given all the traffic
    run = ctx.ledger.get(record.run_id)
    assert run.state == RunState.DEPLOYED, run.history[-1].reason
    assert service.scoring.pinned == [run.endpoint.deployment]
    assert service.workspace.online_endpoints.endpoints[run.endpoint.name].traffic == {run.endpoint.deployment: 100}
    assert run.smoke_test.answer == f"Hello from {run.endpoint.deployment}."
    assert run.endpoint.name.startswith("ep-phi-3-mini-4k-instruct-") and len(run.endpoint.name) <= 32

    # and the model is the champion (a tag: Azure ML models have no aliases)
    (model,) = service.workspace.models.models.values()
    assert model.tags["ft-autopilot-alias"] == "champion"

    # and a late duplicate of the event changes nothing
    calls_before = len(service.calls)
    on_job_event(job_finished(record.run_id))
    assert ctx.ledger.get(record.run_id).state == RunState.DEPLOYED
    assert not [c for c in service.calls[calls_before:] if "create" in c[0] or "delete" in c[0]]


def test_a_second_model_replaces_the_first_and_the_previous_deployment_is_deleted(ctx: AppContext, service):
    # given a deployed first run
    first = deployed_run(ctx, service, "first.jsonl", VALID)
    assert first.state == RunState.DEPLOYED

    # when a second dataset is trained and deployed to the same endpoint
    second = deployed_run(ctx, service, "second.jsonl", VALID + VALID.splitlines(keepends=True)[0])

    # then traffic moved before the old deployment was deleted, and only the new one remains
    assert second.state == RunState.DEPLOYED and second.endpoint.name == first.endpoint.name
    assert second.endpoint.previous_deployment == first.endpoint.deployment
    calls = service.calls
    created = calls.index(("online_deployments.begin_create_or_update", second.endpoint.deployment))
    shift = calls.index(("online_endpoints.begin_create_or_update", second.endpoint.name), created)
    retire = calls.index(("online_deployments.begin_delete", first.endpoint.deployment))
    assert created < shift < retire
    assert set(service.workspace.online_deployments.of(second.endpoint.name)) == {second.endpoint.deployment}
    assert service.workspace.online_endpoints.endpoints[second.endpoint.name].traffic == {
        second.endpoint.deployment: 100
    }


def test_a_failed_smoke_test_rolls_back_and_leaves_the_traffic_where_it_was(ctx: AppContext, service):
    first = deployed_run(ctx, service, "first.jsonl", VALID)
    second = trained_run(ctx, service, "second.jsonl", VALID + VALID.splitlines(keepends=True)[0])
    service.silent_deployments.add("d-" + second.run_id.removeprefix("ft-"))

    on_job_event(job_finished(second.run_id))
    sweep()

    rolled_back = ctx.ledger.get(second.run_id)
    assert rolled_back.state == RunState.ROLLED_BACK
    assert rolled_back.error.code == "smoke_test_failed"
    endpoint = service.workspace.online_endpoints.endpoints[first.endpoint.name]
    assert endpoint.traffic == {first.endpoint.deployment: 100}
    assert set(service.workspace.online_deployments.of(first.endpoint.name)) == {first.endpoint.deployment}


def test_a_deployment_that_fails_to_provision_is_rolled_back_with_its_logs(ctx: AppContext, service):
    # given a deployment that Azure reports as failed
    service.deployment_outcome = "Failed"
    record = trained_run(ctx, service)

    # when the job finishes and the sweep follows the deployment
    on_job_event(job_finished(record.run_id))
    sweep()

    # then the run is rolled back with the end of the deployment's logs, and the deployment deleted
    run = ctx.ledger.get(record.run_id)
    assert run.state == RunState.ROLLED_BACK
    assert run.error.code == "deployment_failed"
    assert "exited with code 137 (out of memory)" in run.error.message
    assert ("online_deployments.get_logs", run.endpoint.deployment) in service.calls
    assert service.workspace.online_deployments.of(run.endpoint.name) == {}


def test_the_sweep_tears_down_idle_managed_endpoints_only(ctx: AppContext, service, engine: AzureMLEngine):
    # given a deployed endpoint that just answered the smoke test, and two more without any request
    busy = deployed_run(ctx, service, "train.jsonl", VALID)
    engine.create_or_update_endpoint("ep-idle-managed", {MANAGED_TAG: "true"})
    service.workspace.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep-someone-elses"))

    # when the sweep runs (the endpoints were created three hours ago, the idle window is an hour)
    sweep()

    # then only the idle endpoint the app manages is gone; models stay registered
    remaining = set(service.workspace.online_endpoints.endpoints)
    assert remaining == {busy.endpoint.name, "ep-someone-elses"}
    assert ("online_endpoints.begin_delete", "ep-idle-managed") in service.calls
    assert len(service.workspace.models.models) == 1
    assert ctx.ledger.get(busy.run_id).state == RunState.DEPLOYED


def test_an_endpoint_whose_activity_cannot_be_read_is_kept(ctx: AppContext, service, engine: AzureMLEngine):
    # given an idle managed endpoint, and Azure Monitor down
    engine.create_or_update_endpoint("ep-idle-managed", {MANAGED_TAG: "true"})
    service.metrics.unavailable = True

    # when the sweep runs
    sweep()

    # then nothing is deleted on missing information
    assert "ep-idle-managed" in service.workspace.online_endpoints.endpoints
    assert service.count("online_endpoints.begin_delete") == 0


def test_an_endpoint_still_being_deleted_is_busy_not_reused(service, engine: AzureMLEngine):
    # given an endpoint the idle sweep began to delete a moment ago
    engine.create_or_update_endpoint("ep-going", {MANAGED_TAG: "true"})
    service.workspace.online_endpoints.endpoints["ep-going"]._provisioning_state = "Deleting"

    # when a restore or a new deployment asks for it, the answer is a transient error, retried later
    with pytest.raises(EngineError) as raised:
        engine.create_or_update_endpoint("ep-going", {MANAGED_TAG: "true"})
    assert raised.value.code == "endpoint_busy" and raised.value.transient is True


def test_a_job_that_missed_heartbeats_is_still_running(ctx: AppContext, service, engine: AzureMLEngine):
    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))
    (record,) = ctx.ledger.list()
    service.job_script = ("NotResponding",)

    assert engine.get_job(record.run_id).status == JobStatus.RUNNING


def test_an_idle_deployed_endpoint_is_torn_down_and_its_run_keeps_what_restore_needs(ctx: AppContext, service):
    run = deployed_run(ctx, service, "train.jsonl", VALID)
    service.scoring.requests.clear()  # Azure Monitor has no request in the window

    sweep()

    torn_down = ctx.ledger.get(run.run_id)
    assert torn_down.state == RunState.TORN_DOWN
    assert torn_down.model is not None and torn_down.endpoint.name == run.endpoint.name
    assert run.endpoint.name not in service.workspace.online_endpoints.endpoints
    assert len(service.workspace.models.models) == 1


def test_a_canceled_run_cancels_its_pipeline_job(ctx: AppContext, service):
    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))
    (record,) = ctx.ledger.list()

    canceled = cancel_run(ctx, record.run_id)

    assert canceled.state == RunState.CANCELED
    assert ("jobs.begin_cancel", record.run_id) in service.calls


def test_a_missing_base_model_fails_the_run_with_the_setting_named(ctx: AppContext, service):
    service.registry.models.present = False

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    (record,) = ctx.ledger.list()
    assert record.state == RunState.FAILED
    assert record.error.code == "base_model_unavailable" and "BASE_MODEL_ID" in record.error.message
    assert service.count("jobs.create_or_update") == 0


def test_the_latest_label_of_a_model_without_active_versions_is_reported_as_unavailable(
    ctx: AppContext, settings, service
):
    # given BASE_MODEL_ID by label, and a registry where that model has no active version (archived)
    service.registry.models.present = False
    ctx.engine_factory = lambda: adapter_over(
        service,
        datasets_container=settings.datasets_container,
        base_model_id="azureml://registries/azureml/models/Phi-3-mini-4k-instruct/labels/latest",
    )

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    # then the SDK's ValidationException is read as "not there", not as a bad request
    (record,) = ctx.ledger.list()
    assert record.error.code == "base_model_unavailable"
    assert ("registry.models.get", "Phi-3-mini-4k-instruct:latest") in service.calls


def test_a_serving_size_the_model_cannot_use_fails_the_run_before_training(ctx: AppContext, settings, service):
    ctx.engine_factory = lambda: adapter_over(
        service, datasets_container=settings.datasets_container, inference_instance_type="Standard_D4s_v3"
    )

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    (record,) = ctx.ledger.list()
    assert record.state == RunState.FAILED
    assert record.error.code == "compute_not_usable" and "AZUREML_INFERENCE_INSTANCE_TYPE" in record.error.message
    assert service.count("jobs.create_or_update") == 0


def test_an_unusable_cluster_fails_the_run_before_anything_is_submitted(ctx: AppContext, service):
    # given the configured cluster is of a size outside the model's fine-tuning allow-list
    service.workspace.compute.clusters["gpu-a100"].size = "Standard_NC6"

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    (record,) = ctx.ledger.list()
    assert record.state == RunState.FAILED
    assert record.error.code == "compute_not_usable" and "Standard_NC6" in record.error.message
    assert service.count("jobs.create_or_update") == 0


def test_the_idle_window_is_older_than_the_requests_the_fake_counts():
    # a guard on this module's premise: endpoints are created three hours before now
    assert FakeAzureML().started < datetime.now(UTC) - timedelta(hours=2)
