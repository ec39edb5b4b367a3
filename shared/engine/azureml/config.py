"""The Azure ML engine's settings, and a run's pipeline job once its base model and compute are known: shared by
the adapter (engine.py) and the offline dry run (dry_run.py), neither of which the other needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.domain.errors import EngineNotConfigured
from shared.domain.tags import RUN_TAG
from shared.engine.azureml.pipeline import FinetuneCompute, PipelineJobSpec, pipeline_job_spec
from shared.engine.base import JobSpec
from shared.settings import Settings

# The VM size a run's model is served on, chosen at submission from its base model's inference list and carried
# from the job to the registered model: deploying and restoring never depend on the registry still listing the base
# model, nor on what BASE_MODEL_ID names by then.
SERVING_SIZE_TAG = "ft-autopilot-serving-size"


@dataclass(frozen=True)
class AzureMLConfig:
    subscription_id: str
    resource_group: str
    workspace_name: str
    registry_name: str
    pipeline_version: str
    base_model_id: str
    compute: str
    finetune_instance_type: str
    datastore: str
    datasets_container: str
    experiment_name: str
    inference_instance_type: str | None  # None: the cheapest current size in the base model's inference list
    idle_window: timedelta
    client_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, require_workspace: bool = True) -> AzureMLConfig:
        """The adapter's settings; without `require_workspace` (a dry run) the workspace may be left unset."""
        missing = [
            alias
            for alias, value in (
                ("AZURE_SUBSCRIPTION_ID", settings.azure_subscription_id),
                ("AZURE_RESOURCE_GROUP", settings.azure_resource_group),
                ("AZUREML_WORKSPACE_NAME", settings.azureml_workspace_name),
            )
            if not value
        ]
        if missing and require_workspace:
            raise EngineNotConfigured(f"AUTOPILOT_ENGINE=azureml needs {', '.join(missing)}")
        return cls(
            subscription_id=settings.azure_subscription_id or "",
            resource_group=settings.azure_resource_group or "",
            workspace_name=settings.azureml_workspace_name or "",
            registry_name=settings.azureml_registry_name,
            pipeline_version=settings.azureml_pipeline_version,
            base_model_id=settings.base_model_id,
            compute=settings.azureml_compute,
            finetune_instance_type=settings.azureml_finetune_instance_type,
            datastore=settings.azureml_datastore,
            datasets_container=settings.datasets_container,
            experiment_name=settings.azureml_experiment_name,
            inference_instance_type=settings.azureml_inference_instance_type or None,
            idle_window=timedelta(minutes=settings.idle_minutes),
            client_id=settings.azure_client_id,
        )

    def data_uri(self, container: str, blob: str) -> str:
        """A prepared split as the job reads it: through the workspace datastore on the datasets container."""
        if container != self.datasets_container:
            raise EngineNotConfigured(
                f"the prepared splits are in container {container}, but datastore {self.datastore} points at "
                f"{self.datasets_container} (DATASETS_CONTAINER)"
            )
        return f"azureml://datastores/{self.datastore}/paths/{blob}"


def run_pipeline_spec(
    config: AzureMLConfig,
    spec: JobSpec,
    *,
    model_name: str,
    model_id: str,
    model_defaults: Mapping[str, Any],
    component_inputs: Iterable[str],
    compute: FinetuneCompute,
    serving_size: str | None,
) -> PipelineJobSpec:
    """A run's pipeline job, once its base model and compute are known (from the service, or assumed offline). The
    serving size, when known, goes on the job as a tag, for the registered model to carry."""
    serving = {SERVING_SIZE_TAG: serving_size} if serving_size else {}
    return pipeline_job_spec(
        job_name=spec.job_name,
        experiment_name=config.experiment_name,
        model_name=model_name,
        model_id=model_id,
        parameters=spec.parameters,
        model_defaults=model_defaults,
        component_inputs=list(component_inputs),
        compute=compute,
        train_uri=config.data_uri(spec.data.container, spec.data.train_blob),
        test_uri=config.data_uri(spec.data.container, spec.data.test_blob),
        tags={**spec.tags, **serving, RUN_TAG: spec.run_id},
    )
