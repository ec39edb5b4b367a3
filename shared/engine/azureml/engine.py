"""The Engine port over azure-ai-ml: chat_completion_pipeline jobs, the model registry, managed online endpoints.

Every operation goes through the workspace and registry clients given to the constructor (`connect` builds the
real ones with DefaultAzureCredential; tests give a recording fake). Creates are get-before-create, so a redelivered
event never makes a second job, model version or deployment. Long operations: endpoint creation and traffic
updates are waited for (a minute or two); a deployment (ten minutes or more for an LLM) is begun and left running,
and the lifecycle polls `get_deployment` from the idle sweep until it has succeeded or failed.

The engine is one object behind the port, made of collaborators that share the clients (clients.py): the base model
and compute (base_model.py), jobs (jobs.py), models (models.py), endpoints (endpoints.py), deployments
(deployments.py) and scoring (scoring.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from shared.domain.clock import utc_now
from shared.domain.errors import EngineError
from shared.engine.azureml.base_model import BaseModelLookup
from shared.engine.azureml.clients import AzureMLClients
from shared.engine.azureml.config import AzureMLConfig
from shared.engine.azureml.deployments import AzureMLDeployments
from shared.engine.azureml.endpoints import AzureMLEndpoints
from shared.engine.azureml.job_metrics import HttpGet, http_get_json
from shared.engine.azureml.jobs import AzureMLJobs
from shared.engine.azureml.model_card import FoundationModel
from shared.engine.azureml.models import AzureMLModels
from shared.engine.azureml.monitoring import LazyMetricsClient, MetricsQuery
from shared.engine.azureml.pipeline import FinetuneCompute, PipelineJobSpec
from shared.engine.azureml.scoring import AzureMLScoring, HttpPost, http_post_json
from shared.engine.azureml.sdk_errors import translated
from shared.engine.base import (
    DeploymentInfo,
    EndpointInfo,
    EndpointKeys,
    JobInfo,
    JobMetrics,
    JobSpec,
    ModelRef,
    ScoringRequest,
)


class AzureMLEngine:
    name = "azureml"

    def __init__(
        self,
        config: AzureMLConfig,
        workspace: Any,
        registry: Any,
        *,
        credential: Any = None,
        metrics: MetricsQuery | None = None,
        http_post: HttpPost = http_post_json,
        tracking_get: HttpGet = http_get_json,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        clients = AzureMLClients(config, workspace, registry, credential, now)
        self._base_model = BaseModelLookup(clients)
        self._jobs = AzureMLJobs(clients, self._base_model, tracking_get)
        self._models = AzureMLModels(clients, self._jobs)
        self._endpoints = AzureMLEndpoints(clients, metrics)
        self._deployments = AzureMLDeployments(clients, self._base_model, self._models, self._endpoints)
        self._scoring = AzureMLScoring(clients, self._endpoints, http_post)

    @classmethod
    def connect(cls, config: AzureMLConfig) -> AzureMLEngine:
        """The real clients: a workspace MLClient and a registry MLClient over DefaultAzureCredential (the managed
        identity in Azure, AZURE_CLIENT_ID naming a user-assigned one), and an Azure Monitor metrics client."""
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        with translated(f"connect to workspace {config.workspace_name} and registry {config.registry_name}"):
            credential = DefaultAzureCredential(managed_identity_client_id=config.client_id)
            workspace = MLClient(
                credential,
                subscription_id=config.subscription_id,
                resource_group_name=config.resource_group,
                workspace_name=config.workspace_name,
            )
            registry = MLClient(credential, registry_name=config.registry_name)  # discovers the registry: network
        metrics = LazyMetricsClient(workspace, credential)
        return cls(config, workspace, registry, credential=credential, metrics=metrics)

    # -- base model and compute -----------------------------------------------------------------------

    def foundation_model(self) -> FoundationModel:
        return self._base_model.foundation_model()

    def finetune_compute(self, model: FoundationModel) -> FinetuneCompute:
        return self._base_model.finetune_compute(model)

    def pipeline_job_spec(self, spec: JobSpec, model: FoundationModel) -> PipelineJobSpec:
        return self._jobs.pipeline_job_spec(spec, model)

    def serving_size(self, model: ModelRef) -> str:
        return self._deployments.serving_size(model)

    # -- jobs -----------------------------------------------------------------------------------------

    def submit_job(self, spec: JobSpec) -> JobInfo:
        return self._jobs.submit_job(spec)

    def get_job(self, name: str) -> JobInfo:
        return self._jobs.get_job(name)

    def cancel_job(self, name: str) -> JobInfo:
        return self._jobs.cancel_job(name)

    def job_metrics(self, name: str) -> JobMetrics:
        return self._jobs.job_metrics(name)

    # -- models ---------------------------------------------------------------------------------------

    def register_model(self, job_name: str, model_name: str, tags: Mapping[str, str]) -> ModelRef:
        return self._models.register_model(job_name, model_name, tags)

    def get_model(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None:
        return self._models.get_model(name, version=version, alias=alias)

    def set_model_alias(self, model: ModelRef, alias: str) -> None:
        self._models.set_model_alias(model, alias)

    # -- endpoints and deployments --------------------------------------------------------------------

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        return self._endpoints.create_or_update_endpoint(name, tags)

    def create_deployment(self, endpoint_name: str, deployment_name: str, model: ModelRef) -> DeploymentInfo:
        return self._deployments.create_deployment(endpoint_name, deployment_name, model)

    def create_base_model_deployment(self, endpoint_name: str, deployment_name: str, base_model: str) -> DeploymentInfo:
        # a managed deployment of the base model costs a GPU for the evaluation's length: the profile says this
        # engine does not serve one, and a first run is gated on the degeneration checks and the loss alone
        raise EngineError(
            "the azureml engine does not deploy base models for evaluations", code="not_supported", transient=False
        )

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        return self._deployments.get_deployment(endpoint_name, deployment_name)

    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str:
        return self._deployments.deployment_logs(endpoint_name, deployment_name, lines)

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        return self._endpoints.set_traffic(endpoint_name, traffic)

    def get_keys(self, endpoint_name: str) -> EndpointKeys:
        return self._endpoints.get_keys(endpoint_name)

    def invoke(self, request: ScoringRequest) -> Any:
        return self._scoring.invoke(request)

    def list_endpoints(self) -> list[EndpointInfo]:
        return self._endpoints.list_endpoints()

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        self._deployments.delete_deployment(endpoint_name, deployment_name)

    def delete_endpoint(self, name: str) -> None:
        self._endpoints.delete_endpoint(name)
