"""The Azure ML pipeline job, built offline from the component's interface file and serialized as the service
receives it; the base model and compute rules; SDK errors as the app's codes. No network, no credentials."""

from __future__ import annotations

from dataclasses import replace

import pytest
from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from shared.domain.errors import EngineError
from shared.domain.finetune import FineTuneParameters
from shared.engine.azureml.foundation import (
    BaseModelRef,
    BaseModelUnavailable,
    ComputeNotUsable,
    check_cluster_state,
    check_compute_size,
    gpus_per_node,
    parse_base_model_id,
)
from shared.engine.azureml.pipeline import (
    FinetuneCompute,
    build_pipeline_job,
    display_name,
    job_request_body,
    load_offline_component,
    merge_model_defaults,
    pipeline_job_spec,
)
from shared.engine.azureml.sdk_errors import translate

MODEL_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"


@pytest.fixture(scope="module")
def component():
    return load_offline_component("azureml", "0.0.82")


def notebook_job(component, parameters: FineTuneParameters | None = None, model_defaults=None, compute=None):
    spec = pipeline_job_spec(
        job_name="ft-0123456789ab",
        experiment_name="ft-autopilot",
        model_name="Phi-3-mini-4k-instruct",
        model_id=MODEL_ID,
        parameters=parameters or FineTuneParameters(),
        model_defaults=model_defaults or {},
        component_inputs=list(component.inputs),
        compute=compute or FinetuneCompute(name="gpu-cluster-big", gpus_per_node=8),
        train_uri="azureml://datastores/ftautopilot/paths/prepared/ft-0123456789ab/train.jsonl",
        test_uri="azureml://datastores/ftautopilot/paths/prepared/ft-0123456789ab/test.jsonl",
        tags={"ft-autopilot-run": "ft-0123456789ab"},
    )
    return spec, job_request_body(build_pipeline_job(component, spec))


def literal_inputs(body) -> dict[str, str]:
    (node,) = body["properties"]["jobs"].values()
    return {name: value["value"] for name, value in node["inputs"].items() if value["job_input_type"] == "literal"}


# -- the job as the service receives it -----------------------------------------------------------------------


def test_the_interface_file_declares_the_component_inputs_and_outputs(component):
    assert len(component.inputs) == 69
    assert set(component.outputs) == {"pytorch_model_folder", "mlflow_model_folder"}
    assert component.inputs["apply_lora"].enum == ["true", "false"]


def test_the_notebook_defaults_reach_the_service_as_lowercase_strings(component):
    # given the app's defaults (the notebook's) on a cluster with 8 GPUs per node
    _, body = notebook_job(component)

    # when the job is serialized for the service
    inputs = literal_inputs(body)

    # then every value is a literal string, yes/no ones lowercase
    assert {k: inputs[k] for k in ("apply_lora", "apply_deepspeed", "merge_lora_weights")} == {
        "apply_lora": "true",
        "apply_deepspeed": "true",
        "merge_lora_weights": "true",
    }
    assert not any(value in ("True", "False") for value in inputs.values())
    assert inputs["num_train_epochs"] == "3"
    assert inputs["per_device_train_batch_size"] == inputs["per_device_eval_batch_size"] == "1"
    assert inputs["learning_rate"] == "5e-06"
    assert inputs["lr_scheduler_type"] == "cosine"
    assert inputs["deepspeed_stage"] == "2"
    assert inputs["task_name"] == "ChatCompletion"
    assert inputs["number_of_gpu_to_use_finetuning"] == "8"
    for step in ("model_import", "preprocess", "finetune", "model_evaluation"):
        assert inputs[f"compute_{step}"] == "gpu-cluster-big"
    assert "instance_type_finetune" not in inputs  # a cluster's size is its own


def test_the_job_carries_its_name_tags_settings_data_and_the_pinned_component(component):
    _, body = notebook_job(component)

    properties = body["properties"]
    (node_name, node) = next(iter(properties["jobs"].items()))
    assert body["name"] == "ft-0123456789ab"
    assert properties["experimentName"] == "ft-autopilot"
    assert properties["tags"] == {"ft-autopilot-run": "ft-0123456789ab"}
    assert properties["settings"]["force_rerun"] is True
    assert properties["settings"]["continue_on_step_failure"] is False
    assert node_name == "chat_completion_pipeline"
    assert node["componentId"] == "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
    assert node["inputs"]["mlflow_model_path"] == {"uri": MODEL_ID, "job_input_type": "mlflow_model"}
    assert node["inputs"]["train_file_path"]["uri"].endswith("/paths/prepared/ft-0123456789ab/train.jsonl")
    assert node["inputs"]["test_file_path"]["job_input_type"] == "uri_file"
    assert node["outputs"]["mlflow_model_folder"]["value"] == "${{parent.outputs.trained_model}}"
    assert properties["outputs"] == {"trained_model": {"jobOutputType": "mlflow_model"}}


def test_the_display_name_is_the_notebooks(component):
    spec, body = notebook_job(component)

    assert spec.display_name == "Phi-3-mini-4k-instruct-ultrachat-bs8-cosine-ds2-lora-save_limit1-seqlen2048"
    assert body["properties"]["displayName"] == spec.display_name


def test_the_display_name_counts_the_effective_batch_and_names_what_is_off():
    inputs = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "apply_deepspeed": "false",
        "apply_lora": "false",
        "lr_scheduler_type": "linear",
        "save_total_limit": -1,
        "max_seq_length": 512,
    }

    name = display_name("m", inputs, FinetuneCompute(name="c", gpus_per_node=4, num_nodes=2))

    assert name == "m-ultrachat-bs64-linear-nods-nolora-save_limit-1-seqlen512"


def test_serverless_compute_names_the_instance_type(component):
    _, body = notebook_job(
        component, compute=FinetuneCompute(name="serverless", gpus_per_node=2, instance_type="Standard_NC48ads_A100_v4")
    )

    inputs = literal_inputs(body)
    assert inputs["compute_finetune"] == "serverless"
    assert inputs["instance_type_finetune"] == "Standard_NC48ads_A100_v4"
    assert inputs["number_of_gpu_to_use_finetuning"] == "2"


def test_a_model_default_the_component_lacks_is_left_out_and_listed(component):
    # given model defaults naming an input the pinned component does not have
    spec, body = notebook_job(component, model_defaults={"no_such_input": 1, "num_train_epochs": 2})

    # then the job is built without it, the other default applied, and the spec lists what was left out
    assert "no_such_input" not in literal_inputs(body)
    assert literal_inputs(body)["num_train_epochs"] == "2"
    assert spec.dropped_defaults == {"no_such_input": 1}
    assert spec.dropped_defaults_warning("0.0.82") == (
        "the base model's model_specific_defaults name what chat_completion_pipeline 0.0.82 has no input for; "
        "left out: no_such_input=1"
    )


def test_an_input_the_component_lacks_is_still_refused_before_submission(component):
    # given a spec whose inputs name something the component does not take (not a model default: ours)
    spec, _ = notebook_job(component)
    broken = replace(spec, inputs={**spec.inputs, "no_such_input": "1"})

    with pytest.raises(EngineError) as raised:
        build_pipeline_job(component, broken)

    assert raised.value.code == "azureml_invalid_job" and "no_such_input" in raised.value.message
    assert raised.value.transient is False


# -- model-specific defaults ----------------------------------------------------------------------------------


def test_a_run_override_beats_the_models_default():
    inputs = merge_model_defaults(
        FineTuneParameters(num_train_epochs=5, apply_lora=False), {"num_train_epochs": 1, "apply_lora": "True"}
    )

    assert inputs["num_train_epochs"] == 5
    assert inputs["apply_lora"] == "false"


def test_a_model_default_outside_the_parameters_is_passed_on():
    inputs = merge_model_defaults(FineTuneParameters(), {"num_nodes_finetune": 2, "auto_find_batch_size": False})

    assert inputs["num_nodes_finetune"] == 2 and inputs["auto_find_batch_size"] == "false"


# -- base model -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (MODEL_ID, BaseModelRef("azureml", "Phi-3-mini-4k-instruct", version="15")),
        ("azureml://registries/other/models/m/labels/latest", BaseModelRef("other", "m", label="latest")),
        ("Phi-3-mini-4k-instruct:15", BaseModelRef("azureml", "Phi-3-mini-4k-instruct", version="15")),
        ("Phi-3-mini-4k-instruct", BaseModelRef("azureml", "Phi-3-mini-4k-instruct", label="latest")),
    ],
)
def test_base_model_ids_are_parsed(value, expected):
    assert parse_base_model_id(value, "azureml") == expected


def test_a_label_other_than_latest_is_refused_because_the_sdk_cannot_resolve_it():
    with pytest.raises(BaseModelUnavailable) as raised:
        parse_base_model_id("azureml://registries/azureml/models/m/labels/stable", "azureml")

    assert "pin a version" in raised.value.message


def test_a_base_model_id_that_is_not_a_registry_id_names_the_setting():
    with pytest.raises(BaseModelUnavailable) as raised:
        parse_base_model_id("https://huggingface.co/microsoft/phi-3", "azureml")

    assert raised.value.code == "base_model_unavailable" and "BASE_MODEL_ID" in raised.value.message


# -- compute --------------------------------------------------------------------------------------------------


def test_compute_sizes_follow_the_allow_list_case_insensitively():
    check_compute_size("standard_nc24ads_a100_v4", ["Standard_NC24ads_A100_v4"])
    with pytest.raises(ComputeNotUsable) as raised:
        check_compute_size("Standard_NC6s_v3", ["Standard_NC24ads_A100_v4"])
    assert "Standard_NC24ads_A100_v4" in raised.value.message


def test_without_an_allow_list_only_k80_sizes_are_refused():
    check_compute_size("Standard_ND40rs_v2", None)
    with pytest.raises(ComputeNotUsable):
        check_compute_size("Standard_NC24r", None)


def test_a_failed_cluster_and_a_size_without_gpus_are_refused():
    with pytest.raises(ComputeNotUsable) as failed:
        check_cluster_state("gpu", "Failed")
    with pytest.raises(ComputeNotUsable) as cpu:
        gpus_per_node("Standard_D13_v2", [("Standard_D13_v2", 0)])
    with pytest.raises(ComputeNotUsable) as unknown:
        gpus_per_node("Standard_X", [("Standard_D13_v2", 0)])

    assert "failed state" in failed.value.message
    assert "no GPU" in cpu.value.message
    assert "not among the workspace's sizes" in unknown.value.message
    assert gpus_per_node("standard_nd96asr_v4", [("Standard_ND96asr_v4", 8)]) == 8


# -- SDK errors -----------------------------------------------------------------------------------------------


def http_error(status: int, message: str) -> HttpResponseError:
    error = HttpResponseError(message=message)
    error.status_code = status
    return error


@pytest.mark.parametrize(
    ("error", "code", "transient", "hint"),
    [
        (
            http_error(400, "Not enough quota available for Standard_NC6s_v3. Current usage/limit: 0/6 OutOfQuota"),
            "azureml_quota_exceeded",
            False,
            "Request more quota",
        ),
        (
            ResourceExistsError(message="There is already an endpoint with this name"),
            "azureml_already_exists",
            False,
            "unique per region",
        ),
        (
            ResourceExistsError(message="Conflict: another operation is in progress"),
            "azureml_conflict",
            True,
            "retried later",
        ),
        (
            ValidationException(
                message="no active version of model m",
                no_personal_data_message="no active version",
                error_type=ValidationErrorType.RESOURCE_NOT_FOUND,
            ),
            "azureml_not_found",
            False,
            "BASE_MODEL_ID",
        ),
        (ResourceNotFoundError(message="workspace not found"), "azureml_not_found", False, "AZUREML_WORKSPACE_NAME"),
        (http_error(429, "Too many requests"), "azureml_throttled", True, "retried later"),
        (http_error(503, "Service unavailable"), "azureml_unavailable", True, "retried later"),
        (ServiceRequestError(message="connection refused"), "azureml_unavailable", True, "retried later"),
        (ClientAuthenticationError(message="no token"), "azureml_auth_failed", False, "AzureML Data Scientist"),
        (http_error(400, "bad input"), "azureml_request_rejected", False, "bad input"),
    ],
)
def test_sdk_errors_become_stable_codes_with_actionable_messages(error, code, transient, hint):
    translated = translate(error, "create endpoint ep-x")

    assert (translated.code, translated.transient) == (code, transient)
    assert translated.message.startswith("create endpoint ep-x: ")
    assert hint in translated.message


def test_a_non_sdk_error_is_not_disguised():
    with pytest.raises(KeyError):
        translate(KeyError("bug"), "anything")
