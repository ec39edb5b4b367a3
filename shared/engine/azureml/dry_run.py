"""The pipeline job a run would submit, built offline: no network, no credentials, no Azure account.

Users review it before paying for GPUs (`autopilot run PATH --engine azureml --dry-run`). What only the service
knows is stood in for, and each stand-in is listed in `assumptions`. Given the base model's own YAML
(`--model-file`: an azureml-assets spec.yaml, or `az ml model show --registry-name azureml ... -o yaml`), its
defaults, compute lists and archive state are applied as the service would apply them; without it, they are
assumptions. GPUs per node come from the sizes chat models are fine-tuned on (the service reads them from
compute.list_sizes()).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.engine.azureml.config import AzureMLConfig, run_pipeline_spec
from shared.engine.azureml.foundation import (
    check_compute_size,
    inference_size,
    parse_base_model_id,
    serving_size_warning,
)
from shared.engine.azureml.model_card import FoundationModel, check_fine_tunable
from shared.engine.azureml.pipeline import (
    SERVERLESS,
    FinetuneCompute,
    build_pipeline_job,
    job_request_body,
    load_offline_component,
)
from shared.engine.base import JobSpec

# GPUs per node of the sizes chat models are fine-tuned on (Azure's VM size tables), for offline builds only.
KNOWN_GPUS_PER_NODE = {
    "standard_nc24ads_a100_v4": 1,
    "standard_nc48ads_a100_v4": 2,
    "standard_nc96ads_a100_v4": 4,
    "standard_nc40ads_h100_v5": 1,
    "standard_nc80adis_h100_v5": 2,
    "standard_nd96asr_v4": 8,
    "standard_nd96amsr_a100_v4": 8,
    "standard_nd96isr_h100_v5": 8,
    "standard_nd40rs_v2": 8,
    "standard_nc24rs_v3": 4,
    "standard_nc24s_v3": 4,
    "standard_nc12s_v3": 2,
    "standard_nc6s_v3": 1,
}


@dataclass(frozen=True)
class DryRun:
    job_name: str
    display_name: str
    request_body: dict[str, Any]  # the job as the service would receive it
    assumptions: list[str]
    warnings: list[str] = field(default_factory=list)
    dropped_defaults: dict[str, Any] = field(default_factory=dict)  # model defaults the component has no input for
    inference_instance_type: str | None = None


def offline_pipeline_job(
    config: AzureMLConfig, spec: JobSpec, *, model: FoundationModel | None = None, now: datetime
) -> DryRun:
    """The job for `spec`. With `model` (read from its YAML) the model is checked as at submission: an archived or
    retired one raises BaseModelUnavailable, a size outside its lists ComputeNotUsable."""
    base = parse_base_model_id(config.base_model_id, config.registry_name)
    serverless = config.compute.lower() == SERVERLESS
    gpus = KNOWN_GPUS_PER_NODE.get(config.finetune_instance_type.lower(), 1) if serverless else 1
    compute = FinetuneCompute(
        name=SERVERLESS if serverless else config.compute,
        gpus_per_node=gpus,
        instance_type=config.finetune_instance_type if serverless else None,
    )
    assumptions = [
        (
            f"{gpus} GPU(s) per node assumed for {config.finetune_instance_type}"
            if serverless
            else f"compute {config.compute} not checked (existence, state, size allow-list); 1 GPU per node assumed"
        )
        + ": at submission the number comes from the workspace's compute.list_sizes()",
    ]
    warnings: list[str] = []
    component = load_offline_component(config.registry_name, config.pipeline_version)
    if model is None:
        assumptions.insert(
            0,
            f"model_specific_defaults of {base.name} are not applied, nor its archive state and compute lists: they "
            f"are read from registry {base.registry} at submission (give its YAML with --model-file to apply them)",
        )
        if base.version is None:
            assumptions.append(f"{base.asset_id} is resolved to a version at submission")
        model = FoundationModel(id=base.asset_id, name=base.name, version=base.version or base.label or "")
        serving = config.inference_instance_type
    else:
        assumptions.extend(
            f"the model file does not give its {what}: the registry's is applied at submission"
            for what in model.not_stated
        )
        warnings.extend(check_fine_tunable(model, now))
        if serverless:
            check_compute_size(config.finetune_instance_type, model.finetune_allow_list)
        serving = config.inference_instance_type
        if model.inference_allow_list is not None or serving:
            serving = inference_size(serving, model.inference_allow_list)
    job_spec = run_pipeline_spec(
        config,
        spec,
        model_name=model.name,
        model_id=model.id,
        model_defaults=model.finetune_defaults,
        component_inputs=list(component.inputs),
        compute=compute,
        serving_size=serving,
    )
    dropped = job_spec.dropped_defaults_warning(config.pipeline_version)
    if dropped:
        warnings.append(dropped)
    retiring = serving_size_warning(config.inference_instance_type)
    if retiring:
        warnings.append(retiring)
    job = build_pipeline_job(component, job_spec)
    return DryRun(
        job_name=spec.job_name,
        display_name=job_spec.display_name,
        request_body=job_request_body(job),
        assumptions=assumptions,
        warnings=warnings,
        dropped_defaults=dict(job_spec.dropped_defaults),
        inference_instance_type=serving,
    )
