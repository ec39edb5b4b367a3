"""The Engine contract, run against the Azure ML adapter over the recording fake of the service (tests/engine/
azureml_fake.py): the same behaviour the local engine shows, through the azure-ai-ml entities the adapter builds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from shared.engine.azureml.engine import AzureMLConfig, AzureMLEngine
from shared.engine.base import RUN_TAG, JobSpec, TrainingData
from shared.finetune import parameters_for
from tests.engine.azureml_fake import BASE_MODEL_ID, RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, FakeAzureML
from tests.engine.contract import EngineContract, trained  # noqa: F401 (the suite's shared fixture)


def azureml_config(**changes: object) -> AzureMLConfig:
    values: dict[str, object] = {
        "subscription_id": SUBSCRIPTION,
        "resource_group": RESOURCE_GROUP,
        "workspace_name": WORKSPACE,
        "registry_name": "azureml",
        "pipeline_version": "0.0.82",
        "base_model_id": BASE_MODEL_ID,
        "compute": "gpu-a100",
        "finetune_instance_type": "Standard_NC24ads_A100_v4",
        "datastore": "ftautopilot",
        "datasets_container": "datasets",
        "experiment_name": "ft-autopilot",
        "inference_instance_type": "Standard_NC6s_v3",
        "idle_window": timedelta(minutes=60),
    }
    return AzureMLConfig(**{**values, **changes})


def adapter_over(service: FakeAzureML, **config_changes: object) -> AzureMLEngine:
    return AzureMLEngine(
        azureml_config(**config_changes),
        service.workspace,
        service.registry,
        credential=service.credential,
        metrics=service.metrics,
        tracking_get=service.tracking_get,
    )


@pytest.fixture(scope="module")
def service() -> Iterator[FakeAzureML]:
    service = FakeAzureML()
    yield service
    service.close()


@pytest.fixture(scope="module")
def engine(service: FakeAzureML) -> AzureMLEngine:
    return adapter_over(service)


@pytest.fixture(scope="module")
def job_spec():
    def make(run_id: str) -> JobSpec:
        return JobSpec(
            run_id=run_id,
            base_model=BASE_MODEL_ID,
            parameters=parameters_for("azureml", BASE_MODEL_ID),
            data=TrainingData("datasets", f"prepared/{run_id}/train.jsonl", f"prepared/{run_id}/test.jsonl"),
            tags={RUN_TAG: run_id},
        )

    return make


@pytest.fixture(scope="module")
def wait_s() -> float:
    return 5.0


class TestAzureMLEngine(EngineContract):
    evaluates_base_model = False  # the pipeline's evaluation steps are commented out: no base-model loss
