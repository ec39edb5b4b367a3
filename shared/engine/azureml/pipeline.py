"""The fine-tuning pipeline job, built as the walk-through notebook builds it.

The pure part decides the component's inputs: the app's parameters, with the base model's `model_specific_defaults`
merged in (those the pinned component has no input for are left out, and listed), yes/no values as the lowercase
strings the component expects, compute and GPUs per node, and the notebook's display name. `build_pipeline_job`
turns that into an azure-ai-ml PipelineJob (azure.ai.ml is imported there, never at module level), and
`job_request_body` shows the job as the service receives it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.domain.finetune import FineTuneParameters

COMPONENT_NAME = "chat_completion_pipeline"
COMPONENT_SPEC = Path(__file__).with_name("chat_completion_pipeline.yaml")
NODE_NAME = "chat_completion_pipeline"  # the notebook's name for the step
TRAINED_MODEL_OUTPUT = "trained_model"  # the pipeline output the model is registered from
SERVERLESS = "serverless"
TASK_NAME = "ChatCompletion"


@dataclass(frozen=True)
class FinetuneCompute:
    """Where every step runs: a cluster (its name) or serverless (an instance type), and its GPUs per node."""

    name: str
    gpus_per_node: int
    instance_type: str | None = None  # serverless only
    num_nodes: int = 1


@dataclass(frozen=True)
class PipelineJobSpec:
    """Everything a pipeline job is made of, decided before azure.ai.ml is touched."""

    job_name: str
    experiment_name: str
    display_name: str
    model_id: str  # the foundation model's asset id (the notebook's mlflow_model_path)
    train_uri: str
    test_uri: str
    inputs: Mapping[str, str | int | float]  # literal inputs, yes/no already as "true"/"false"
    tags: Mapping[str, str] = field(default_factory=dict)
    dropped_defaults: Mapping[str, Any] = field(default_factory=dict)  # model defaults the component has no input for

    def dropped_defaults_warning(self, component_version: str) -> str | None:
        if not self.dropped_defaults:
            return None
        listed = ", ".join(f"{name}={value!r}" for name, value in sorted(self.dropped_defaults.items()))
        return (
            f"the base model's model_specific_defaults name what {COMPONENT_NAME} {component_version} has no input "
            f"for; left out: {listed}"
        )


def component_literal(value: Any) -> Any:
    """A yes/no value as the component's string enum, "true" or "false": Python's True would reach the service as
    "True", which the component rejects and the SDK does not catch; "True" written in a tag or override is lowered."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower()
    return value


def split_model_defaults(
    model_defaults: Mapping[str, Any], component_inputs: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's defaults the component takes, and those it has no input for (Phi-3's learning_rate_min/max):
    a registry tag written for another component version must not fail every submission."""
    known = set(component_inputs)
    applied = {name: value for name, value in model_defaults.items() if name in known}
    dropped = {name: value for name, value in model_defaults.items() if name not in known}
    return applied, dropped


def merge_model_defaults(
    parameters: FineTuneParameters, model_defaults: Mapping[str, Any]
) -> dict[str, str | int | float]:
    """The component inputs for these parameters, with the base model's own defaults where the run kept the app's.

    The notebook applies `model_specific_defaults` over its defaults; here a parameter still at the app's default
    takes the model's value, and one the run set to something else (FINETUNE_OVERRIDES, a request) is kept. A model
    default that is not one of our parameters (e.g. num_nodes_finetune) is passed on as it is: keep to the
    component's inputs with split_model_defaults first."""
    app_defaults = FineTuneParameters().model_dump()
    chosen = parameters.model_dump()
    merged: dict[str, Any] = dict(chosen)
    for name, value in model_defaults.items():
        if name not in chosen or chosen[name] == app_defaults[name]:
            merged[name] = value
    if "precision" in merged:  # the model tag says 16, the component wants "16"
        merged["precision"] = str(merged["precision"])
    if "deepspeed_stage" in merged:
        merged["deepspeed_stage"] = str(merged["deepspeed_stage"])
    return {name: component_literal(value) for name, value in merged.items()}


def compute_inputs(compute: FinetuneCompute) -> dict[str, str | int]:
    inputs: dict[str, str | int] = {
        f"compute_{step}": compute.name for step in ("model_import", "preprocess", "finetune", "model_evaluation")
    }
    if compute.name == SERVERLESS and compute.instance_type:
        inputs["instance_type_finetune"] = compute.instance_type
        inputs["instance_type_model_evaluation"] = compute.instance_type
    inputs["number_of_gpu_to_use_finetuning"] = compute.gpus_per_node
    if compute.num_nodes != 1:
        inputs["num_nodes_finetune"] = compute.num_nodes
    return inputs


def display_name(model_name: str, inputs: Mapping[str, Any], compute: FinetuneCompute) -> str:
    """The notebook's: <model>-ultrachat-bs<batch>-<scheduler>-<ds2|nods>-<lora|nolora>-save_limit<n>-seqlen<n>,
    where batch is the effective one (per device x accumulation x GPUs per node x nodes)."""
    batch = (
        int(inputs.get("per_device_train_batch_size", 1))
        * int(inputs.get("gradient_accumulation_steps", 1))
        * compute.gpus_per_node
        * int(inputs.get("num_nodes_finetune", compute.num_nodes))
    )
    deepspeed = f"ds{inputs.get('deepspeed_stage', '2')}" if inputs.get("apply_deepspeed") == "true" else "nods"
    lora = "lora" if inputs.get("apply_lora") == "true" else "nolora"
    return (
        f"{model_name}-ultrachat-bs{batch}-{inputs.get('lr_scheduler_type', 'linear')}-{deepspeed}-{lora}"
        f"-save_limit{inputs.get('save_total_limit', -1)}-seqlen{inputs.get('max_seq_length', -1)}"
    )


def pipeline_job_spec(
    *,
    job_name: str,
    experiment_name: str,
    model_name: str,
    model_id: str,
    parameters: FineTuneParameters,
    model_defaults: Mapping[str, Any],
    component_inputs: Collection[str],
    compute: FinetuneCompute,
    train_uri: str,
    test_uri: str,
    tags: Mapping[str, str],
) -> PipelineJobSpec:
    applied, dropped = split_model_defaults(model_defaults, component_inputs)
    inputs = {**merge_model_defaults(parameters, applied), **compute_inputs(compute), "task_name": TASK_NAME}
    return PipelineJobSpec(
        job_name=job_name,
        experiment_name=experiment_name,
        display_name=display_name(model_name, inputs, compute),
        model_id=model_id,
        train_uri=train_uri,
        test_uri=test_uri,
        inputs=inputs,
        tags=dict(tags),
        dropped_defaults=dropped,
    )


def build_pipeline_job(component: Any, spec: PipelineJobSpec) -> Any:
    """An azure-ai-ml PipelineJob running `component` (chat_completion_pipeline) once, as the notebook does."""
    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    unknown = sorted(set(spec.inputs) - set(component.inputs))
    if unknown:
        from shared.domain.errors import EngineError

        raise EngineError(
            f"{COMPONENT_NAME} {component.version} has no input {', '.join(unknown)}: "
            "check FINETUNE_OVERRIDES and the base model's model_specific_defaults against that version",
            code="azureml_invalid_job",
            transient=False,
        )

    @pipeline(None, name=spec.display_name)  # func=None spelled out: the library's overload gives it no default
    def chat_completion_finetuning() -> dict[str, Any]:
        node = component(
            mlflow_model_path=Input(type="mlflow_model", path=spec.model_id),
            train_file_path=Input(type="uri_file", path=spec.train_uri),
            test_file_path=Input(type="uri_file", path=spec.test_uri),
            **spec.inputs,
        )
        node.name = NODE_NAME
        return {TRAINED_MODEL_OUTPUT: node.outputs.mlflow_model_folder}

    job = chat_completion_finetuning()
    job.name = spec.job_name
    job.display_name = spec.display_name
    job.experiment_name = spec.experiment_name
    job.tags = dict(spec.tags)
    settings = job.settings
    assert settings is not None  # typed Optional, but the library's getter creates them when unset
    settings.force_rerun = True  # never reuse a cached step of another run
    settings.continue_on_step_failure = False
    return job


def load_offline_component(registry_name: str, version: str) -> Any:
    """The component from its interface file, standing for the registry's `version` (its id says so): what a dry
    run and the tests build with, without network or credentials."""
    from azure.ai.ml import load_component

    component = load_component(source=COMPONENT_SPEC)
    component.version = version
    component._id = component_id(registry_name, version)  # serialized as a reference, as a fetched one would be
    return component


def component_id(registry_name: str, version: str) -> str:
    return f"azureml://registries/{registry_name}/components/{COMPONENT_NAME}/versions/{version}"


def job_request_body(job: Any) -> dict[str, Any]:
    """The job as the service receives it: the REST body, every input a literal string or a data reference."""
    return job._to_rest_object().as_dict()
