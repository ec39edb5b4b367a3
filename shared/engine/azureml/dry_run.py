"""The pipeline job a run would submit, built offline: no network, no credentials, no Azure account.

Users review it before paying for GPUs (`autopilot run PATH --engine azureml --dry-run`). Two things only the
service knows are stood in for, and each stand-in is listed in `assumptions`: the base model's
model_specific_defaults (not applied) and the GPUs per node of the compute (from the sizes the notebook's models are
fine-tuned on; the service reads them from compute.list_sizes()).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.engine.azureml.engine import AzureMLConfig, run_pipeline_spec
from shared.engine.azureml.foundation import parse_base_model_id
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
    "standard_nd96asr_v4": 8,
    "standard_nd96amsr_a100_v4": 8,
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


def offline_pipeline_job(config: AzureMLConfig, spec: JobSpec) -> DryRun:
    base = parse_base_model_id(config.base_model_id, config.registry_name)
    serverless = config.compute.lower() == SERVERLESS
    gpus = KNOWN_GPUS_PER_NODE.get(config.finetune_instance_type.lower(), 1) if serverless else 1
    compute = FinetuneCompute(
        name=SERVERLESS if serverless else config.compute,
        gpus_per_node=gpus,
        instance_type=config.finetune_instance_type if serverless else None,
    )
    assumptions = [
        f"model_specific_defaults of {base.name} are not applied: they are read from registry {base.registry} at "
        "submission and replace the parameters this run leaves at the app's defaults",
        (
            f"{gpus} GPU(s) per node assumed for {config.finetune_instance_type}"
            if serverless
            else f"compute {config.compute} not checked (existence, state, size allow-list); 1 GPU per node assumed"
        )
        + ": at submission the number comes from the workspace's compute.list_sizes()",
    ]
    if base.version is None:
        assumptions.append(f"{base.asset_id} is resolved to a version at submission")
    job_spec = run_pipeline_spec(
        config, spec, model_name=base.name, model_id=base.asset_id, model_defaults={}, compute=compute
    )
    job = build_pipeline_job(load_offline_component(config.registry_name, config.pipeline_version), job_spec)
    return DryRun(
        job_name=spec.run_id,
        display_name=job_spec.display_name,
        request_body=job_request_body(job),
        assumptions=assumptions,
    )
