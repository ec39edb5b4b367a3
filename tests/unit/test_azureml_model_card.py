"""A registry model's fine-tuning metadata, read from the real azureml-assets specs (Phi-3-mini-4k-instruct, the
walk-through's model, archived; Phi-4, current) in the three shapes it comes in: spec.yaml, `az ml model show -o
yaml` (tags as strings), and the registry's REST body. Pure: no SDK, no network."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
import yaml

from shared.engine.azureml.foundation import (
    BaseModelUnavailable,
    ComputeNotUsable,
    inference_size,
    is_retiring,
)
from shared.engine.azureml.model_card import check_fine_tunable, from_model_document, from_registry_body
from shared.engine.azureml.pipeline import COMPONENT_SPEC, split_model_defaults
from tests.engine.azureml_service import recorded

NOW = datetime(2026, 12, 1, tzinfo=UTC)
PHI3_INFERENCE = (
    "Standard_NC6s_v3",
    "Standard_NC12s_v3",
    "Standard_NC24s_v3",
    "Standard_ND40rs_v2",
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_NC96ads_A100_v4",
)


@pytest.fixture
def phi3() -> dict:
    return recorded.spec_document(recorded.PHI3_SPEC)


@pytest.fixture
def phi4() -> dict:
    return recorded.spec_document(recorded.PHI4_SPEC)


def cli_yaml(spec: dict) -> dict:
    """What `az ml model show -o yaml` gives: the SDK's Model schema, every tag a string (a Python literal)."""
    shown = {key: spec[key] for key in ("name", "version")}
    shown["tags"] = {key: value if isinstance(value, str) else repr(value) for key, value in spec["tags"].items()}
    shown["system_metadata"] = spec["system_metadata"]
    shown["stage"] = "Archived" if spec.get("isArchived") else "Active"
    return yaml.safe_load(yaml.safe_dump(shown))


# -- the walk-through's model: archived --------------------------------------------------------------------------


def test_phi3s_spec_is_archived_and_refused_with_the_flag_and_date(phi3):
    model = from_model_document(phi3, registry="azureml")

    with pytest.raises(BaseModelUnavailable) as raised:
        check_fine_tunable(model, NOW)

    assert raised.value.code == "base_model_unavailable" and raised.value.transient is False
    assert raised.value.message.startswith("BASE_MODEL_ID: Phi-3-mini-4k-instruct version 15 is archived")
    assert "isArchived: true, fine-tune retirement date 2025-08-30" in raised.value.message


def test_phi3_unarchived_is_still_refused_past_its_fine_tune_retirement(phi3):
    phi3["isArchived"] = False

    with pytest.raises(BaseModelUnavailable) as raised:
        check_fine_tunable(from_model_document(phi3, registry="azureml"), NOW)

    assert "retired for fine-tuning on 2025-08-30" in raised.value.message


def test_phi3_before_its_retirement_is_accepted_with_a_deprecation_warning(phi3):
    phi3["isArchived"] = False
    model = from_model_document(phi3, registry="azureml")

    warnings = check_fine_tunable(model, datetime(2025, 7, 15, tzinfo=UTC))

    assert warnings == [
        "Phi-3-mini-4k-instruct version 15 is deprecated for fine-tuning since 2025-06-30, and retires on 2025-08-30: "
        "plan a move of BASE_MODEL_ID to a newer model"
    ]


def test_phi3s_real_defaults_include_two_keys_the_pinned_component_lacks(phi3):
    model = from_model_document(phi3, registry="azureml")
    component_inputs = yaml.safe_load(COMPONENT_SPEC.read_text())["inputs"]

    applied, dropped = split_model_defaults(model.finetune_defaults, component_inputs)

    assert dropped == {"learning_rate_min": "5e-7", "learning_rate_max": "5e-5"}
    assert applied["learning_rate"] == "5e-6" and applied["deepspeed_stage"] == 2 and len(applied) == 15


def test_the_offline_component_interface_has_the_recorded_components_inputs():
    ours = yaml.safe_load(COMPONENT_SPEC.read_text())
    real = recorded.spec_document(recorded.COMPONENT_SPEC)

    assert (ours["version"], sorted(ours["inputs"])) == (real["version"], sorted(real["inputs"]))
    assert {name: spec["type"] for name, spec in ours["inputs"].items()} == {
        name: spec["type"] for name, spec in real["inputs"].items()
    }


def test_allow_lists_come_from_supported_computes(phi3):
    model = from_model_document(phi3, registry="azureml")

    assert model.inference_allow_list == PHI3_INFERENCE
    assert model.finetune_allow_list == (
        "Standard_NC24ads_A100_v4",
        "Standard_NC48ads_A100_v4",
        "Standard_NC96ads_A100_v4",
        "Standard_ND96asr_v4",
        "Standard_ND96amsr_A100_v4",
    )


def test_legacy_allow_list_tags_are_read_when_system_metadata_has_none(phi3):
    del phi3["system_metadata"]["supportedComputes"]
    phi3["tags"]["finetune_compute_allow_list"] = "['Standard_NC96ads_A100_v4']"
    phi3["tags"]["inference_compute_allow_list"] = ["Standard_NC24ads_A100_v4"]

    model = from_model_document(phi3, registry="azureml")

    assert model.finetune_allow_list == ("Standard_NC96ads_A100_v4",)
    assert model.inference_allow_list == ("Standard_NC24ads_A100_v4",)


def test_legacy_retirement_tags_are_read(phi3):
    phi3["isArchived"] = False
    del phi3["system_metadata"]["deprecation"]
    phi3["tags"]["FinetuneRetirementDate"] = "2025-08-30"

    with pytest.raises(BaseModelUnavailable) as raised:
        check_fine_tunable(from_model_document(phi3, registry="azureml"), NOW)

    assert "retired for fine-tuning on 2025-08-30" in raised.value.message


# -- the three shapes agree ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["spec.yaml", "az ml model show", "registry REST body"])
def test_every_shape_of_phi3_reads_the_same(phi3, shape):
    if shape == "spec.yaml":
        model = from_model_document(phi3, registry="azureml")
    elif shape == "az ml model show":
        model = from_model_document(cli_yaml(phi3), registry="azureml")
    else:
        body = recorded.registry_model_version("/registries/azureml", phi3, NOW)
        model = from_registry_body(body, registry="azureml", name="Phi-3-mini-4k-instruct")

    assert model.id == "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"
    assert model.archived is True
    assert model.finetune_retirement == datetime(2025, 8, 30, tzinfo=UTC)
    assert model.finetune_defaults["learning_rate_max"] == "5e-5"
    assert model.finetune_defaults["num_train_epochs"] == 1
    assert model.inference_allow_list == PHI3_INFERENCE
    assert model.fine_tuning_tasks == ("chat-completion",)


def test_the_archive_flag_is_read_beside_the_inner_properties_not_inside_them(phi3):
    # given the REST body of an active version whose inner properties carry a stray isArchived
    phi3["isArchived"] = False
    body = recorded.registry_model_version("/registries/azureml", phi3, NOW)
    body["properties"]["properties"] = {"isArchived": "true"}

    model = from_registry_body(body, registry="azureml", name="Phi-3-mini-4k-instruct")

    assert model.archived is False

    # and when the flag beside them says archived, it is
    archived = copy.deepcopy(body)
    archived["properties"]["isArchived"] = True
    assert from_registry_body(archived, registry="azureml", name="Phi-3-mini-4k-instruct").archived is True


def test_system_metadata_written_as_the_sdk_sends_it_is_read_too(phi3):
    body = recorded.registry_model_version("/registries/azureml", phi3, NOW)
    body["properties"]["system_metadata"] = body["properties"].pop("systemMetadata")

    model = from_registry_body(body, registry="azureml", name="Phi-3-mini-4k-instruct")

    assert model.inference_allow_list == PHI3_INFERENCE


# -- a current model: Phi-4 ------------------------------------------------------------------------------------


def test_phi4_is_fine_tunable_and_all_its_defaults_are_component_inputs(phi4):
    model = from_model_document(phi4, registry="azureml")
    component_inputs = yaml.safe_load(COMPONENT_SPEC.read_text())["inputs"]

    assert check_fine_tunable(model, NOW) == []
    applied, dropped = split_model_defaults(model.finetune_defaults, component_inputs)
    assert dropped == {} and applied["deepspeed_stage"] == 3
    assert model.id == "azureml://registries/azureml/models/Phi-4/versions/8"


def test_phi4s_default_serving_size_is_the_cheapest_current_one_it_lists(phi4):
    model = from_model_document(phi4, registry="azureml")

    assert inference_size(None, model.inference_allow_list) == "Standard_NC24ads_A100_v4"


# -- inference sizes -------------------------------------------------------------------------------------------


def test_phi3s_default_serving_size_skips_the_retiring_ncv3_it_lists_first():
    assert inference_size(None, PHI3_INFERENCE) == "Standard_NC24ads_A100_v4"


def test_a_t4_in_the_list_is_preferred_as_the_cheapest():
    assert inference_size(None, ["Standard_NC24ads_A100_v4", "standard_nc4as_t4_v3"]) == "standard_nc4as_t4_v3"


def test_a_configured_serving_size_is_kept_when_the_model_lists_it():
    assert inference_size("Standard_NC6s_v3", PHI3_INFERENCE) == "Standard_NC6s_v3"


def test_a_configured_serving_size_the_model_does_not_list_is_refused():
    with pytest.raises(ComputeNotUsable) as raised:
        inference_size("Standard_D4s_v3", PHI3_INFERENCE)

    assert "AZUREML_INFERENCE_INSTANCE_TYPE" in raised.value.message


def test_a_list_of_only_retiring_sizes_asks_for_the_setting():
    with pytest.raises(ComputeNotUsable) as raised:
        inference_size(None, ["Standard_NC6s_v3", "Standard_ND40rs_v2"])

    assert "set AZUREML_INFERENCE_INSTANCE_TYPE" in raised.value.message


@pytest.mark.parametrize(
    ("size", "retiring"),
    [
        ("Standard_NC6s_v3", True),
        ("Standard_NC24rs_v3", True),
        ("Standard_ND40rs_v2", True),
        ("Standard_NC6", True),
        ("Standard_NC12s_v2", True),
        ("Standard_NC4as_T4_v3", False),
        ("Standard_NC24ads_A100_v4", False),
        ("Standard_NC40ads_H100_v5", False),
        ("Standard_ND96asr_v4", False),
    ],
)
def test_retiring_gpu_families(size, retiring):
    assert is_retiring(size) is retiring


# -- what a document does not say, and dates it says in other ways ---------------------------------------------


def test_a_document_without_archive_state_or_compute_lists_says_so(phi4):
    # given what `az ml model show` may print: no isArchived (the SDK drops it), no stage, no system metadata
    shown = {"name": "Phi-4", "version": 8, "tags": {"model_specific_defaults": "{'num_train_epochs': 1}"}}

    model = from_model_document(shown, registry="azureml")

    assert model.not_stated == ("archive state (isArchived)", "fine-tune compute list", "inference compute list")
    assert model.archived is False and model.finetune_defaults == {"num_train_epochs": 1}
    assert from_model_document(phi4, registry="azureml").not_stated == ()


def test_an_unquoted_yaml_retirement_date_is_read(phi3):
    phi3["isArchived"] = False
    phi3["system_metadata"]["deprecation"] = yaml.safe_load("finetuneRetirementDate: 2025-08-30")

    with pytest.raises(BaseModelUnavailable) as raised:
        check_fine_tunable(from_model_document(phi3, registry="azureml"), NOW)

    assert "retired for fine-tuning on 2025-08-30" in raised.value.message


def test_a_time_with_seven_fraction_digits_keeps_its_offset(phi3):
    phi3["isArchived"] = False
    phi3["system_metadata"]["deprecation"] = {"finetuneRetirementDate": "2027-01-01T01:00:00.1234567+05:00"}

    model = from_model_document(phi3, registry="azureml")

    assert model.finetune_retirement == datetime(2026, 12, 31, 20, 0, 0, 123456, tzinfo=UTC)


def test_an_unreadable_retirement_date_is_a_warning_not_silence(phi3):
    phi3["isArchived"] = False
    phi3["system_metadata"]["deprecation"] = {"finetuneRetirementDate": "08/30/2025"}

    warnings = check_fine_tunable(from_model_document(phi3, registry="azureml"), NOW)

    assert warnings == [
        "Phi-3-mini-4k-instruct version 15: cannot read finetuneRetirementDate '08/30/2025', so it was not checked"
    ]


def test_a_model_without_an_inference_list_needs_the_setting():
    with pytest.raises(ComputeNotUsable) as raised:
        inference_size(None, None)

    assert raised.value.message == "the base model lists no inference sizes: set AZUREML_INFERENCE_INSTANCE_TYPE"
