"""Settings and fine-tune parameters: typed, validated, and never exposing secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.domain.finetune import LOCAL_PRESETS, FineTuneParameters, parameters_for
from shared.engine import engine_profile
from shared.settings import Settings


def test_settings_read_the_fixed_names_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUTOPILOT_ENGINE", "azureml")
    monkeypatch.setenv("DATASETS_CONTAINER", "uploads")
    monkeypatch.setenv("TEST_FRACTION", "0.25")
    monkeypatch.setenv("DatasetStorage", "UseDevelopmentStorage=true")

    settings = Settings()

    assert (settings.engine, settings.datasets_container, settings.test_fraction) == ("azureml", "uploads", 0.25)
    assert engine_profile(settings).base_model == settings.base_model_id


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUTOPILOT_ENGINE", "sagemaker")
    with pytest.raises(ValidationError, match="AUTOPILOT_ENGINE"):
        Settings()
    monkeypatch.delenv("AUTOPILOT_ENGINE")
    with pytest.raises(ValidationError, match=r"(?i)test_fraction"):
        Settings(test_fraction=1.0)
    with pytest.raises(ValidationError, match="PREPARED_PREFIX"):
        Settings(prepared_prefix="prepared")


def test_the_storage_connection_string_never_shows_in_repr():
    settings = Settings(storage_connection_string="AccountKey=very-secret")
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings.model_dump())


def test_parameters_default_to_the_notebook_and_refuse_unknown_names():
    defaults = FineTuneParameters()
    assert (defaults.num_train_epochs, defaults.learning_rate, defaults.lr_scheduler_type) == (3, 5e-6, "cosine")
    assert (defaults.apply_lora, defaults.apply_deepspeed, defaults.deepspeed_stage) == (True, True, "2")
    with pytest.raises(ValidationError, match="extra_forbidden"):
        FineTuneParameters(num_epochs=3)
    with pytest.raises(ValidationError):
        FineTuneParameters(learning_rate=0)


def test_the_gate_requires_a_base_eval_only_from_engines_that_make_one():
    assert engine_profile(Settings(engine="local")).gate_requires_base_eval is True
    assert engine_profile(Settings(engine="azureml")).gate_requires_base_eval is False
    assert engine_profile(Settings(engine="azureml", gate_require_base_eval=True)).gate_requires_base_eval is True
    assert engine_profile(Settings(engine="local", gate_require_base_eval=False)).gate_requires_base_eval is False


def test_each_engine_profile_says_what_the_engine_implies():
    # given the local engine on the tiny model, and Azure ML with a workspace
    local = engine_profile(Settings(engine="local", local_base_model="tiny"))
    azure = engine_profile(
        Settings(engine="azureml", azure_subscription_id="s", azure_resource_group="g", azureml_workspace_name="w")
    )

    # then each says its base model, event topic, endpoint-name scope and presets
    assert (local.name, local.base_model, local.endpoint_scope, local.previews_jobs_offline) == (
        "local",
        "tiny",
        "",
        False,
    )
    assert local.workspace_topic.endswith("/workspaces/local") and local.parameter_presets == LOCAL_PRESETS["tiny"]
    workspace = "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"
    assert (azure.workspace_topic, azure.endpoint_scope, azure.parameter_presets) == (workspace, workspace, {})
    assert azure.base_model == Settings().base_model_id and azure.previews_jobs_offline is True
    assert parameters_for(local.parameter_presets).num_train_epochs == LOCAL_PRESETS["tiny"]["num_train_epochs"]


def test_the_profile_names_the_sizes_runs_and_endpoints_are_billed_by():
    # the local engine bills nothing; Azure ML bills the fine-tune size, and the serving size once it is known
    local = engine_profile(Settings(engine="local"))
    assert (local.finetune_instance_type, local.serving_instance_type) == (None, None)
    unset = engine_profile(Settings(engine="azureml"))
    assert (unset.finetune_instance_type, unset.serving_instance_type) == ("Standard_NC24ads_A100_v4", None)
    given = engine_profile(
        Settings(
            engine="azureml",
            azureml_finetune_instance_type="Standard_NC96ads_A100_v4",
            azureml_inference_instance_type="Standard_NC4as_T4_v3",
        )
    )
    assert (given.finetune_instance_type, given.serving_instance_type) == (
        "Standard_NC96ads_A100_v4",
        "Standard_NC4as_T4_v3",
    )
