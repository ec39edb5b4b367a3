"""The base model and the compute of a fine-tuning job, as the service has them now: the registry's model body, the
pipeline component, and the cluster (or serverless size) checked against the model's allow-list."""

from __future__ import annotations

from typing import Any

from shared.domain.errors import EngineNotConfigured
from shared.engine.azureml.clients import AzureMLClients, get_or_none, state_text
from shared.engine.azureml.foundation import (
    BaseModelRef,
    BaseModelUnavailable,
    ComputeNotUsable,
    check_cluster_state,
    check_compute_size,
    gpus_per_node,
    parse_base_model_id,
)
from shared.engine.azureml.model_card import FoundationModel, from_registry_body
from shared.engine.azureml.pipeline import COMPONENT_NAME, SERVERLESS, FinetuneCompute
from shared.engine.azureml.registry import registry_model_body
from shared.engine.azureml.sdk_errors import translated


class BaseModelLookup:
    """BASE_MODEL_ID and AZUREML_COMPUTE resolved against the registry and the workspace. The component is read
    once; the base model afresh for every submission, and the last one read is kept for the serving size."""

    def __init__(self, clients: AzureMLClients) -> None:
        self._clients = clients
        self._component: Any = None
        self._foundation: FoundationModel | None = None

    def foundation_model(self) -> FoundationModel:
        """The base model as the registry serves it now: its REST body, which keeps what the SDK's Model drops
        (isArchived, the system metadata with the compute lists and retirement dates). Read afresh for every
        submission: a model can be archived at any time."""
        config, registry = self._clients.config, self._clients.registry
        ref: BaseModelRef = parse_base_model_id(config.base_model_id, config.registry_name)
        if ref.registry != config.registry_name:
            raise EngineNotConfigured(
                f"BASE_MODEL_ID is in registry {ref.registry}, but AZUREML_REGISTRY_NAME is {config.registry_name}"
            )
        action = f"get base model {ref.asset_id} (BASE_MODEL_ID)"
        version = ref.version
        if version is None:  # a label: the SDK resolves it to a version
            resolved = get_or_none(lambda: registry.models.get(ref.name, label=ref.label), action)
            version = str(resolved.version) if resolved is not None else None
        body = None
        if version is not None:
            body = get_or_none(lambda: registry_model_body(registry, ref.name, version), action)
        if body is None:
            raise BaseModelUnavailable(
                f"BASE_MODEL_ID: {ref.asset_id} is not in registry {ref.registry} (archived models, such as "
                "Phi-3-mini-4k-instruct since 2025-08-30, may no longer be listed): set BASE_MODEL_ID to a model "
                "the registry offers for chat-completion fine-tuning"
            )
        self._foundation = from_registry_body(body, registry=ref.registry, name=ref.name)
        return self._foundation

    def last_foundation_model(self) -> FoundationModel:
        """The base model as last read (read now if it never was)."""
        return self._foundation or self.foundation_model()

    def pipeline_component(self) -> Any:
        if self._component is None:
            version = self._clients.config.pipeline_version
            registry_name = self._clients.config.registry_name
            with translated(f"get component {COMPONENT_NAME} version {version} from {registry_name}"):
                self._component = self._clients.registry.components.get(name=COMPONENT_NAME, version=version)
        return self._component

    def finetune_compute(self, model: FoundationModel) -> FinetuneCompute:
        """The notebook's checks: the cluster exists and has not failed, its size is allowed, and its GPUs per node
        are read from the workspace's VM sizes. Serverless checks the instance type the same way."""
        config, workspace = self._clients.config, self._clients.workspace
        if config.compute.lower() == SERVERLESS:
            size, name = config.finetune_instance_type, SERVERLESS
        else:
            cluster = get_or_none(lambda: workspace.compute.get(config.compute), "get compute")
            if cluster is None:
                raise ComputeNotUsable(f"compute {config.compute} (AZUREML_COMPUTE) does not exist in the workspace")
            check_cluster_state(config.compute, state_text(getattr(cluster, "provisioning_state", None)))
            size, name = cluster.size, config.compute
        check_compute_size(size, model.finetune_allow_list)
        with translated("list the workspace's VM sizes"):
            sizes = [(s.name, getattr(s, "gpus", None)) for s in workspace.compute.list_sizes()]
        return FinetuneCompute(
            name=name,
            gpus_per_node=gpus_per_node(size, sizes),
            instance_type=size if name == SERVERLESS else None,
        )
