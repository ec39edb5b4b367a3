"""Managed online deployments: begun at 0% traffic and left provisioning (the lifecycle polls them), their state and
logs, the size they are served on, and their deletion (off traffic first: Azure refuses otherwise)."""

from __future__ import annotations

import logging

from shared.domain.errors import EngineError
from shared.engine.azureml.base_model import BaseModelLookup
from shared.engine.azureml.clients import AzureMLClients, get_or_none, state_text
from shared.engine.azureml.config import SERVING_SIZE_TAG
from shared.engine.azureml.endpoints import AzureMLEndpoints
from shared.engine.azureml.foundation import inference_size
from shared.engine.azureml.models import AzureMLModels
from shared.engine.azureml.sdk_errors import translated
from shared.engine.base import DeploymentInfo, ModelRef

logger = logging.getLogger(__name__)

LIVENESS_INITIAL_DELAY_S = 600  # an LLM container loads for minutes before it answers probes
REQUEST_TIMEOUT_MS = 90_000


class AzureMLDeployments:
    def __init__(
        self,
        clients: AzureMLClients,
        base_model: BaseModelLookup,
        models: AzureMLModels,
        endpoints: AzureMLEndpoints,
    ) -> None:
        self._clients = clients
        self._base_model = base_model
        self._models = models
        self._endpoints = endpoints

    def create_deployment(self, endpoint_name: str, deployment_name: str, model: ModelRef) -> DeploymentInfo:
        """Begin a deployment at 0% traffic and return while Azure provisions it (it reports `Creating`)."""
        from azure.ai.ml.entities import ManagedOnlineDeployment, OnlineRequestSettings, ProbeSettings

        deployments = self._clients.workspace.online_deployments
        existing = self.get_deployment(endpoint_name, deployment_name)
        if existing is not None:
            return existing
        deployment = ManagedOnlineDeployment(
            name=deployment_name,
            endpoint_name=endpoint_name,
            model=f"azureml:{model.name}:{model.version}",
            instance_type=self.serving_size(model),
            instance_count=1,
            liveness_probe=ProbeSettings(initial_delay=LIVENESS_INITIAL_DELAY_S),
            request_settings=OnlineRequestSettings(request_timeout_ms=REQUEST_TIMEOUT_MS),
            tags={"model": model.name, "model_version": model.version},
        )
        with translated(f"create deployment {deployment_name} on {endpoint_name}"):
            deployments.begin_create_or_update(deployment)
        logger.info("began deployment %s of %s:%s on %s", deployment_name, model.name, model.version, endpoint_name)
        return DeploymentInfo(name=deployment_name, endpoint_name=endpoint_name, model=model, state="Creating")

    def serving_size(self, model: ModelRef) -> str:
        """AZUREML_INFERENCE_INSTANCE_TYPE, or the size chosen for the model's run at submission (its tag); a model
        registered before the tag existed falls back to the current base model's inference list."""
        if self._clients.config.inference_instance_type:
            return self._clients.config.inference_instance_type
        tags = model.tags or {}
        if SERVING_SIZE_TAG not in tags:
            registered = self._models.get_model(model.name, version=model.version)
            tags = registered.tags if registered is not None else {}
        if tags.get(SERVING_SIZE_TAG):
            return tags[SERVING_SIZE_TAG]
        return inference_size(None, self._base_model.last_foundation_model().inference_allow_list)

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        found = get_or_none(
            lambda: self._clients.workspace.online_deployments.get(deployment_name, endpoint_name),
            f"get deployment {deployment_name} of {endpoint_name}",
        )
        if found is None:
            return None
        tags = found.tags or {}
        model = ModelRef(name=tags.get("model", str(found.model)), version=tags.get("model_version", ""))
        state = state_text(getattr(found, "provisioning_state", None)) or "Creating"
        return DeploymentInfo(name=deployment_name, endpoint_name=endpoint_name, model=model, state=state)

    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str:
        with translated(f"get the logs of deployment {deployment_name} on {endpoint_name}"):
            return self._clients.workspace.online_deployments.get_logs(deployment_name, endpoint_name, lines)

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        """Begin the deletion; gone already is fine. Azure refuses to delete a deployment that has traffic, so one
        serving all of it is first set to 0% (as the local engine does implicitly)."""
        workspace = self._clients.workspace
        endpoint = get_or_none(lambda: workspace.online_endpoints.get(endpoint_name), f"get endpoint {endpoint_name}")
        if endpoint is None:
            return
        traffic = dict(endpoint.traffic or {})
        if traffic.get(deployment_name, 0) > 0:
            remaining = {name: weight for name, weight in traffic.items() if name != deployment_name}
            if sum(remaining.values()) not in (0, 100):
                raise EngineError(
                    f"deployment {deployment_name} of {endpoint_name} serves {traffic[deployment_name]}% of the "
                    "traffic: shift it to the other deployments before deleting it",
                    code="invalid_traffic",
                    transient=False,
                )
            self._endpoints.set_traffic(endpoint_name, {**remaining, deployment_name: 0})
        get_or_none(
            lambda: workspace.online_deployments.begin_delete(deployment_name, endpoint_name),
            f"delete deployment {deployment_name} of {endpoint_name}",
        )
