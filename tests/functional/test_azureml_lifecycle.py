"""The app's triggers driving the Azure ML adapter: real Azurite and function handlers, the HTTP-level fake of the
Azure ML service (tests/engine/azureml_service/) behind azure-ai-ml's real clients.

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
from azure.functions.timer import TimerRequest

from shared.context import AppContext
from shared.domain.errors import EngineError
from shared.domain.jobs import JobStatus
from shared.domain.runs import RunRecord, RunState
from shared.domain.tags import MANAGED_TAG
from shared.engine.azureml.engine import AzureMLEngine
from shared.engine.base import ScoringRequest
from shared.settings import Settings
from shared.usecases.lifecycle.jobs import cancel_run
from tests.engine.azureml_service import recorded
from tests.engine.azureml_service.names import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, WORKSPACE_ID
from tests.engine.azureml_service.service import AzureMLService
from tests.engine.test_azureml_engine_contract import BASE_MODEL_ID, adapter_over
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
def service() -> Iterator[AzureMLService]:
    service = AzureMLService()
    yield service
    service.close()


@pytest.fixture
def engine(service: AzureMLService, settings: Settings) -> AzureMLEngine:
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


def trained_run(ctx: AppContext, service: AzureMLService, name: str = "train.jsonl", data: bytes = VALID) -> RunRecord:
    record = submitted_run(ctx, name, data)
    service.set_job_status(record.run_id, "Completed")
    return record


def deployed_run(ctx: AppContext, service: AzureMLService, name: str, data: bytes) -> RunRecord:
    record = trained_run(ctx, service, name, data)
    on_job_event(job_finished(record.run_id))
    sweep()
    return ctx.ledger.get(record.run_id)


PHI3_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"


def use_base_model(ctx: AppContext, settings: Settings, service: AzureMLService, base_model_id: str) -> None:
    """The app's engine, with BASE_MODEL_ID set to another model of the fake registry."""
    ctx.engine_factory = lambda: adapter_over(
        service, datasets_container=settings.datasets_container, base_model_id=base_model_id
    )


def node_inputs(service: AzureMLService, run_id: str) -> dict:
    """The chat_completion_pipeline node's inputs, as the SDK sent them in the job's PUT body."""
    (node,) = service.job_requests[run_id]["properties"]["jobs"].values()
    return node["inputs"]


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
    # and Phi-4's model_specific_defaults went over the app's defaults, as in the notebook
    inputs = node_inputs(service, record.run_id)
    assert inputs["num_train_epochs"]["value"] == "1"
    assert inputs["precision"]["value"] == "16"
    assert inputs["deepspeed_stage"]["value"] == "3"
    assert inputs["compute_finetune"]["value"] == "gpu-a100"
    assert inputs["train_file_path"]["uri"] == (
        f"azureml://datastores/ftautopilot/paths/prepared/{record.run_id}/train.jsonl"
    )
    # and the node references the registry component, with the model as an mlflow_model input
    (node,) = service.job_requests[record.run_id]["properties"]["jobs"].values()
    assert node["componentId"] == "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
    assert inputs["mlflow_model_path"] == {"uri": BASE_MODEL_ID, "job_input_type": "mlflow_model"}
    assert record.warnings == []


def test_model_defaults_the_component_lacks_are_dropped_and_listed_on_the_run(ctx: AppContext, settings, service):
    # given the walk-through's Phi-3 as the registry serves it, but not archived: its defaults name
    # learning_rate_min and learning_rate_max, which chat_completion_pipeline 0.0.82 has no input for
    phi3 = recorded.spec_document(recorded.PHI3_SPEC)
    phi3["isArchived"] = False
    del phi3["system_metadata"]["deprecation"]
    service.put_registry_model(phi3)
    use_base_model(ctx, settings, service, PHI3_ID)

    # when a dataset arrives
    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    # then the job is submitted without them, and the run says which were left out, with their values
    (record,) = ctx.ledger.list()
    assert record.state == RunState.SUBMITTED
    inputs = node_inputs(service, record.run_id)
    assert "learning_rate_min" not in inputs and "learning_rate_max" not in inputs
    assert inputs["learning_rate"]["value"] == "5e-6"
    (warning,) = record.warnings
    assert warning.code == "model_defaults_dropped"
    assert "learning_rate_max='5e-5', learning_rate_min='5e-7'" in warning.message


def test_an_archived_base_model_fails_the_run_naming_the_setting_and_the_flag(ctx: AppContext, settings, service):
    # given the walk-through's Phi-3 exactly as its spec stands: isArchived true, retired 2025-08-30
    service.put_registry_model(recorded.spec_document(recorded.PHI3_SPEC))
    use_base_model(ctx, settings, service, PHI3_ID)

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    (record,) = ctx.ledger.list()
    assert record.state == RunState.FAILED
    assert record.error.code == "base_model_unavailable"
    assert "BASE_MODEL_ID" in record.error.message and "isArchived: true" in record.error.message
    assert "2025-08-30" in record.error.message
    assert service.count("jobs.create_or_update") == 0


def test_a_base_model_past_its_fine_tune_retirement_date_is_refused(ctx: AppContext, settings, service):
    # given a model not archived yet, whose fine-tune retirement date has passed
    phi3 = recorded.spec_document(recorded.PHI3_SPEC)
    phi3["isArchived"] = False
    service.put_registry_model(phi3)
    use_base_model(ctx, settings, service, PHI3_ID)

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    (record,) = ctx.ledger.list()
    assert record.error.code == "base_model_unavailable"
    assert "retired for fine-tuning on 2025-08-30" in record.error.message
    assert "finetuneRetirementDate" in record.error.message


def test_a_finished_job_is_registered_deployed_at_zero_then_shifted_once_it_provisions(ctx: AppContext, service):
    # given a trained run
    record = trained_run(ctx, service)

    # when the job's completion event arrives
    on_job_event(job_finished(record.run_id))

    # then the model is registered once from the job's output, and a deployment is provisioning at 0%
    run = ctx.ledger.get(record.run_id)
    assert run.state == RunState.DEPLOYING
    assert service.count("models.create_or_update") == 1
    (model,) = service.models.values()
    assert model["properties"]["modelUri"] == f"azureml://jobs/{record.run_id}/outputs/trained_model"
    assert model["properties"]["modelType"] == "mlflow_model"
    deployment = service.deployments[run.endpoint.name][run.endpoint.deployment]
    # the size is the cheapest current one in Phi-4's inference list (it lists no NCv3 or T4)
    assert deployment["sku"] == {"name": "Default", "capacity": 1}
    assert deployment["properties"]["instanceType"] == "Standard_NC24ads_A100_v4"
    assert deployment["properties"]["livenessProbe"]["initialDelay"] == "PT10M"
    assert deployment["properties"]["requestSettings"]["requestTimeout"] == "PT1M30S"
    assert service.traffic(run.endpoint.name) == {}  # 0% is not stored
    assert service.endpoints[run.endpoint.name]["properties"]["authMode"] == "Key"
    assert service.scoring.requests == {}, "no smoke test before the deployment is ready"

    # when the sweep looks again, after the deployment has provisioned
    sweep()

    # then it was smoke-tested and evaluated pinned to the new deployment (the smoke test, then the held-out
    # conversations and the probes, 16 per call), and given all the traffic; a first run on Azure ML has nothing to
    # be compared with (the service does not serve the base model), and its evaluation says so
    run = ctx.ledger.get(record.run_id)
    assert run.state == RunState.DEPLOYED, run.history[-1].reason
    assert run.evaluation is not None and run.evaluation.baseline == "none"
    assert [check.code for check in run.evaluation.checks] == ["degenerate_answers"]
    assert run.evaluation.notes[-1].startswith("nothing to compare with")
    calls = 1 + -(-(run.evaluation.examples + run.evaluation.challenger.probes) // ctx.settings.eval_batch_size)
    assert service.scoring.pinned == [run.endpoint.deployment] * calls
    assert service.traffic(run.endpoint.name) == {run.endpoint.deployment: 100}
    assert run.smoke_test.answer == f"Hello from {run.endpoint.deployment}."
    assert run.endpoint.name.startswith("ep-phi-4-") and len(run.endpoint.name) <= 32

    # and the model is the champion (a tag: Azure ML models have no aliases)
    (model,) = service.models.values()
    assert model["properties"]["tags"]["ft-autopilot-alias"] == "champion"

    # and a late duplicate of the event changes nothing
    calls_before = len(service.calls)
    on_job_event(job_finished(record.run_id))
    assert ctx.ledger.get(record.run_id).state == RunState.DEPLOYED
    assert not [c for c in service.calls[calls_before:] if "create" in c[0] or "delete" in c[0]]


def test_deploying_does_not_need_the_base_model_in_the_registry_any_more(ctx: AppContext, service):
    # given a run submitted with Phi-4, whose serving size was chosen then from Phi-4's inference list
    record = trained_run(ctx, service)
    assert service.jobs[record.run_id]["properties"]["tags"]["ft-autopilot-serving-size"] == "Standard_NC24ads_A100_v4"

    # when the registry stops listing the base model while the job trains, and the job then finishes
    service.registry_models.clear()
    calls_before = len(service.calls)
    on_job_event(job_finished(record.run_id))
    sweep()

    # then the model is deployed on the size its run chose, carried on the registered model, without the registry
    run = ctx.ledger.get(record.run_id)
    assert run.state == RunState.DEPLOYED, run.history[-1].reason
    (model,) = service.models.values()
    assert model["properties"]["tags"]["ft-autopilot-serving-size"] == "Standard_NC24ads_A100_v4"
    deployment = service.deployments[run.endpoint.name][run.endpoint.deployment]
    assert deployment["properties"]["instanceType"] == "Standard_NC24ads_A100_v4"
    assert not [call for call in service.calls[calls_before:] if call[0].startswith("registry.")]


def test_a_deprecated_base_model_and_a_retiring_serving_size_are_warnings_on_the_run(
    ctx: AppContext, settings, service
):
    # given Phi-3 deprecated for fine-tuning but not yet retired, and the notebook's old serving size set
    phi3 = recorded.spec_document(recorded.PHI3_SPEC)
    phi3["isArchived"] = False
    phi3["system_metadata"]["deprecation"]["finetuneRetirementDate"] = "2099-01-01T00:00:00Z"
    service.put_registry_model(phi3)
    ctx.engine_factory = lambda: adapter_over(
        service,
        datasets_container=settings.datasets_container,
        base_model_id=PHI3_ID,
        inference_instance_type="Standard_NC6s_v3",
    )

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    # then the job is submitted, and the run says what is coming
    (record,) = ctx.ledger.list()
    assert record.state == RunState.SUBMITTED
    assert [w.code for w in record.warnings] == [
        "base_model_deprecated",
        "model_defaults_dropped",
        "serving_size_retiring",
    ]
    assert record.warnings[0].message.startswith(
        "Phi-3-mini-4k-instruct version 15 is deprecated for fine-tuning since 2025-06-30, and retires on 2099-01-01"
    )
    assert record.warnings[2].message.startswith("AZUREML_INFERENCE_INSTANCE_TYPE=Standard_NC6s_v3 is a GPU size")


def test_a_scoring_request_that_gets_no_answer_in_time_is_a_timeout(ctx: AppContext, service, engine):
    # given a deployed endpoint that answers slowly
    run = deployed_run(ctx, service, "train.jsonl", VALID)
    service.scoring.answer_after_s = 1.0

    # when it is asked with a shorter timeout
    with pytest.raises(EngineError) as raised:
        engine.invoke(ScoringRequest(run.endpoint.name, {"input_data": {"input_string": []}}, timeout_s=0.2))

    # then the adapter says so with the lifecycle's code, as a transient error
    assert raised.value.code == "scoring_timeout" and raised.value.transient is True
    assert raised.value.message == f"{run.endpoint.name} did not answer within 0.2 s"


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
    assert service.deployment_names(second.endpoint.name) == {second.endpoint.deployment}
    assert service.traffic(second.endpoint.name) == {second.endpoint.deployment: 100}


def test_a_failed_smoke_test_rolls_back_and_leaves_the_traffic_where_it_was(ctx: AppContext, service):
    first = deployed_run(ctx, service, "first.jsonl", VALID)
    second = trained_run(ctx, service, "second.jsonl", VALID + VALID.splitlines(keepends=True)[0])
    service.silent_deployments.add("d-" + second.run_id.removeprefix("ft-"))

    on_job_event(job_finished(second.run_id))
    sweep()

    rolled_back = ctx.ledger.get(second.run_id)
    assert rolled_back.state == RunState.ROLLED_BACK
    assert rolled_back.error.code == "smoke_test_failed"
    assert service.traffic(first.endpoint.name) == {first.endpoint.deployment: 100}
    assert service.deployment_names(first.endpoint.name) == {first.endpoint.deployment}


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
    assert service.deployment_names(run.endpoint.name) == set()


def test_the_sweep_tears_down_idle_managed_endpoints_only(ctx: AppContext, service, engine: AzureMLEngine):
    # given a deployed endpoint that just answered the smoke test, and two more without any request
    busy = deployed_run(ctx, service, "train.jsonl", VALID)
    engine.create_or_update_endpoint("ep-idle-managed", {MANAGED_TAG: "true"})
    someone_elses = service.clients()[0]
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    someone_elses.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep-someone-elses")).result()

    # when the sweep runs (the endpoints were created three hours ago, the idle window is an hour)
    sweep()

    # then only the idle endpoint the app manages is gone; models stay registered
    assert set(service.endpoints) == {busy.endpoint.name, "ep-someone-elses"}
    assert ("online_endpoints.begin_delete", "ep-idle-managed") in service.calls
    assert len(service.models) == 1
    assert ctx.ledger.get(busy.run_id).state == RunState.DEPLOYED


def test_an_endpoint_whose_activity_cannot_be_read_is_kept(ctx: AppContext, service, engine: AzureMLEngine):
    # given an idle managed endpoint, and Azure Monitor down
    engine.create_or_update_endpoint("ep-idle-managed", {MANAGED_TAG: "true"})
    service.metrics.unavailable = True

    # when the sweep runs
    sweep()

    # then nothing is deleted on missing information
    assert "ep-idle-managed" in service.endpoints
    assert service.count("online_endpoints.begin_delete") == 0


def test_an_endpoint_still_being_deleted_is_busy_not_reused(service, engine: AzureMLEngine):
    # given an endpoint the idle sweep began to delete a moment ago
    engine.create_or_update_endpoint("ep-going", {MANAGED_TAG: "true"})
    service.endpoints["ep-going"]["properties"]["provisioningState"] = "Deleting"

    # when a restore or a new deployment asks for it, the answer is a transient error, retried later
    with pytest.raises(EngineError) as raised:
        engine.create_or_update_endpoint("ep-going", {MANAGED_TAG: "true"})
    assert raised.value.code == "endpoint_busy" and raised.value.transient is True


def test_a_job_that_missed_heartbeats_is_still_running(ctx: AppContext, service, engine: AzureMLEngine):
    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))
    (record,) = ctx.ledger.list()
    service.set_job_status(record.run_id, "NotResponding")

    assert engine.get_job(record.run_id).status == JobStatus.RUNNING


def test_a_just_deployed_endpoint_is_kept_while_azure_monitor_has_not_shown_its_requests(ctx: AppContext, service):
    # given an endpoint created hours ago that has just been given a new model, whose smoke-test request Azure
    # Monitor has not ingested yet
    run = deployed_run(ctx, service, "train.jsonl", VALID)
    service.scoring.requests.clear()

    # when the next sweep runs
    sweep()

    # then idleness counts from the deployment, not from the endpoint's creation: it stays
    assert ctx.ledger.get(run.run_id).state == RunState.DEPLOYED
    assert run.endpoint.name in service.endpoints


def test_an_idle_deployed_endpoint_is_torn_down_and_its_run_keeps_what_restore_needs(ctx: AppContext, service):
    run = deployed_run(ctx, service, "train.jsonl", VALID)
    service.scoring.requests.clear()  # Azure Monitor has no request in the window

    later = datetime.now(UTC) + timedelta(minutes=90)  # IDLE_MINUTES (60) after the deployment
    ctx.now = lambda: later
    sweep()

    torn_down = ctx.ledger.get(run.run_id)
    assert torn_down.state == RunState.TORN_DOWN
    assert torn_down.model is not None and torn_down.endpoint.name == run.endpoint.name
    assert run.endpoint.name not in service.endpoints
    assert len(service.models) == 1


def test_a_canceled_run_cancels_its_pipeline_job(ctx: AppContext, service):
    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))
    (record,) = ctx.ledger.list()

    canceled = cancel_run(ctx, record.run_id)

    assert canceled.state == RunState.CANCELED
    assert ("jobs.begin_cancel", record.run_id) in service.calls
    assert service.jobs[record.run_id]["properties"]["status"] == "Canceled"


def test_a_missing_base_model_fails_the_run_with_the_setting_named(ctx: AppContext, service):
    service.registry_models.clear()

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    (record,) = ctx.ledger.list()
    assert record.state == RunState.FAILED
    assert record.error.code == "base_model_unavailable" and "BASE_MODEL_ID" in record.error.message
    assert service.count("jobs.create_or_update") == 0


def test_the_latest_label_of_a_model_without_active_versions_is_reported_as_unavailable(
    ctx: AppContext, settings, service
):
    # given BASE_MODEL_ID by label, and a registry where that model's only version is archived
    service.put_registry_model(recorded.spec_document(recorded.PHI3_SPEC))
    use_base_model(ctx, settings, service, "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/labels/latest")

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    # then the SDK's answer for a label with no active version is read as "not there", not as a bad request
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
    service.computes["gpu-a100"] = ("Standard_NC6", "Succeeded")

    on_dataset_uploaded(upload(ctx.settings, "train.jsonl", VALID))

    (record,) = ctx.ledger.list()
    assert record.state == RunState.FAILED
    assert record.error.code == "compute_not_usable" and "Standard_NC6" in record.error.message
    assert service.count("jobs.create_or_update") == 0


def test_the_idle_window_is_older_than_the_requests_the_fake_counts():
    # a guard on this module's premise: endpoints are created three hours before now
    service = AzureMLService()
    assert service.started < datetime.now(UTC) - timedelta(hours=2)
    service.close()
