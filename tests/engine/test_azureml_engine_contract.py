"""The Engine contract, run against the Azure ML adapter over the HTTP-level fake of the service
(tests/engine/azureml_service/): azure-ai-ml's real clients serialize, poll and map errors, answered with the
service's recorded shapes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from shared.domain.finetune import parameters_for
from shared.engine.azureml.config import AzureMLConfig
from shared.engine.azureml.engine import AzureMLEngine
from shared.engine.base import TrainingData
from tests.engine.azureml_service.names import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE
from tests.engine.azureml_service.service import AzureMLService
from tests.engine.contract import EngineContract, job_specs, trained  # noqa: F401 (the suite's shared fixture)

BASE_MODEL_ID = "azureml://registries/azureml/models/Phi-4/versions/8"


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
        "inference_instance_type": None,
        "idle_window": timedelta(minutes=60),
    }
    return AzureMLConfig(**{**values, **changes})


def adapter_over(service: AzureMLService, **config_changes: object) -> AzureMLEngine:
    """The adapter as AzureMLEngine.connect builds it, with the clients reaching the fake instead of Azure."""
    workspace, registry = service.clients()
    return AzureMLEngine(
        azureml_config(**config_changes),
        workspace,
        registry,
        credential=service.credential,
        metrics=service.metrics.client(),
        tracking_get=service.tracking_get,
    )


@pytest.fixture(scope="module")
def service() -> Iterator[AzureMLService]:
    service = AzureMLService()
    yield service
    service.close()


@pytest.fixture(scope="module")
def engine(service: AzureMLService) -> AzureMLEngine:
    return adapter_over(service)


@pytest.fixture(scope="module")
def job_spec():
    return job_specs(BASE_MODEL_ID, parameters_for(), prepared_splits)


def prepared_splits(run_id: str) -> TrainingData:
    return TrainingData("datasets", f"prepared/{run_id}/train.jsonl", f"prepared/{run_id}/test.jsonl")


@pytest.fixture(scope="module")
def wait_s() -> float:
    return 5.0


class TestAzureMLEngine(EngineContract):
    evaluates_base_model = False  # the pipeline's evaluation steps are commented out: no base-model loss
