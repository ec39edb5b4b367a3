"""`autopilot validate`: exit codes 0 valid, 1 invalid, 2 unreadable or bad usage; never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli.main import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_a_valid_file_exits_0_with_a_readable_report(capsys: pytest.CaptureFixture[str]):
    code = main(["validate", str(SAMPLES / "ultrachat_sample.jsonl")])

    out = capsys.readouterr().out
    assert code == 0
    assert "Verdict: **valid**" in out and "Rows: 240" in out


def test_an_invalid_file_exits_1_and_json_prints_only_the_report(capsys: pytest.CaptureFixture[str]):
    code = main(["validate", str(SAMPLES / "ultrachat_broken.jsonl"), "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["valid"] is False
    assert report["errors"][0] == {
        "line": 6,
        "code": "invalid_json",
        "message": "not valid JSON: unexpected end of data at character 92",
    }


def test_test_fraction_sets_the_split(capsys: pytest.CaptureFixture[str]):
    main(["validate", str(SAMPLES / "ultrachat_sample.jsonl"), "--json", "--test-fraction", "0"])
    assert json.loads(capsys.readouterr().out)["split"] == {"train": 240, "test": 0}


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "/no/such/file.jsonl"],
        ["validate", str(SAMPLES)],  # a directory
        ["validate", str(SAMPLES / "ultrachat_sample.jsonl"), "--test-fraction", "1.5"],
        ["validate", str(SAMPLES / "ultrachat_sample.jsonl"), "--test-fraction", "half"],
        ["validate"],
        ["frobnicate"],
    ],
)
def test_unreadable_input_and_bad_usage_exit_2(argv: list[str]):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2


def test_arbitrary_bytes_on_stdin_give_a_verdict_not_a_traceback(tmp_path: Path):
    # given garbage bytes, through the real console entry point
    garbage = bytes(range(256)) * 64 + b"\n{\n\xff\xfe\n"

    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "validate", "-", "--json"],
        input=garbage,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert json.loads(result.stdout)["valid"] is False


# -- autopilot run --engine azureml --dry-run ---------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch):
    """No network and no credentials: any connection attempt or credential fails the test."""
    import socket

    import azure.identity

    from shared.settings import get_settings

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not touch the network or credentials")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", refuse)
    for name in ("AUTOPILOT_ENGINE", "AZURE_SUBSCRIPTION_ID", "FINETUNE_OVERRIDES", "BASE_MODEL_ID", "AZUREML_COMPUTE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def dry_run_inputs(out: str) -> tuple[dict, dict[str, str]]:
    result = json.loads(out)
    (node,) = result["pipeline_job"]["properties"]["jobs"].values()
    literals = {k: v["value"] for k, v in node["inputs"].items() if v["job_input_type"] == "literal"}
    return result, literals


def test_a_dry_run_prints_the_pipeline_job_with_the_notebooks_inputs(offline, capsys: pytest.CaptureFixture[str]):
    # when the bundled sample is dry-run against Azure ML
    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "azureml", "--dry-run", "--json"])

    # then the job is printed, named after the run, with the notebook's parameters as lowercase string literals
    result, inputs = dry_run_inputs(capsys.readouterr().out)
    assert code == 0
    assert result["validation"] == {
        "valid": True,
        "rows": 240,
        "sha256": result["validation"]["sha256"],
        "split": {"train": 214, "test": 26},
    }
    assert result["pipeline_job"]["name"] == result["run_id"]
    assert {
        k: inputs[k]
        for k in (
            "num_train_epochs",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "learning_rate",
            "lr_scheduler_type",
            "apply_lora",
            "apply_deepspeed",
            "deepspeed_stage",
        )
    } == {
        "num_train_epochs": "3",
        "per_device_train_batch_size": "1",
        "per_device_eval_batch_size": "1",
        "learning_rate": "5e-06",
        "lr_scheduler_type": "cosine",
        "apply_lora": "true",
        "apply_deepspeed": "true",
        "deepspeed_stage": "2",
    }
    assert inputs["compute_finetune"] == "serverless" and inputs["number_of_gpu_to_use_finetuning"] == "1"
    assert result["display_name"] == "Phi-4-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen2048"
    assert any("model_specific_defaults" in a for a in result["assumptions"])


def test_a_dry_run_applies_finetune_overrides_and_the_compute_setting(offline, capsys: pytest.CaptureFixture[str]):
    offline.setenv("FINETUNE_OVERRIDES", '{"num_train_epochs": 1, "apply_deepspeed": false}')
    offline.setenv("AZUREML_COMPUTE", "gpu-cluster-big")

    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "azureml", "--dry-run", "--json"])

    _, inputs = dry_run_inputs(capsys.readouterr().out)
    assert code == 0
    assert inputs["num_train_epochs"] == "1" and inputs["apply_deepspeed"] == "false"
    assert inputs["compute_preprocess"] == "gpu-cluster-big" and "instance_type_finetune" not in inputs


def test_a_dry_run_of_an_invalid_file_exits_1_without_a_job(offline, capsys: pytest.CaptureFixture[str]):
    code = main(["run", str(SAMPLES / "ultrachat_broken.jsonl"), "--engine", "azureml", "--dry-run", "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["pipeline_job"] is None and result["validation"]["error_counts"]["invalid_json"] == 1


def test_a_dry_run_is_for_the_azureml_engine_only(offline, capsys: pytest.CaptureFixture[str]):
    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "local", "--dry-run"])

    assert code == 2
    assert "--engine azureml" in capsys.readouterr().err


def test_a_dry_run_without_json_prints_the_job_as_yaml(offline, capsys: pytest.CaptureFixture[str]):
    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "azureml", "--dry-run"])

    out = capsys.readouterr().out
    assert code == 0
    assert "assumed offline:" in out and "componentId: azureml://registries/azureml/components/" in out


def test_a_dry_run_with_a_bad_base_model_setting_exits_2_naming_it(offline, capsys: pytest.CaptureFixture[str]):
    offline.setenv("BASE_MODEL_ID", "https://huggingface.co/microsoft/Phi-3-mini-4k-instruct")

    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "azureml", "--dry-run", "--json"])

    assert code == 2
    assert "base_model_unavailable: BASE_MODEL_ID=" in capsys.readouterr().err


# -- autopilot run --dry-run --model-file: the base model's real metadata, applied offline ----------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHI3_SPEC = FIXTURES / "recordings" / "azureml-assets" / "phi-3-mini-4k-instruct.spec.yaml"
PHI3_UNARCHIVED = FIXTURES / "azureml-assets" / "phi-3-mini-4k-instruct.unarchived.spec.yaml"
PHI4_SPEC = FIXTURES / "azureml-assets" / "phi-4.spec.yaml"
PHI3_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"


def dry_run_with(model_file: Path, *extra: str) -> int:
    return main(
        [
            "run",
            str(SAMPLES / "ultrachat_sample.jsonl"),
            "--engine",
            "azureml",
            "--dry-run",
            "--model-file",
            str(model_file),
            *extra,
        ]
    )


def test_a_dry_run_with_phi3s_real_spec_exits_1_because_it_is_archived(offline, capsys: pytest.CaptureFixture[str]):
    offline.setenv("BASE_MODEL_ID", PHI3_ID)

    code = dry_run_with(PHI3_SPEC, "--json")

    out = capsys.readouterr()
    result = json.loads(out.out)
    assert code == 1
    assert result["pipeline_job"] is None and result["validation"]["valid"] is True
    assert result["error"]["code"] == "base_model_unavailable"
    assert "isArchived: true, fine-tune retirement date 2025-08-30" in result["error"]["message"]
    assert "autopilot: base_model_unavailable: BASE_MODEL_ID: Phi-3-mini-4k-instruct version 15" in out.err


def test_a_dry_run_with_phi3_unarchived_applies_its_defaults_and_lists_the_dropped_keys(
    offline, capsys: pytest.CaptureFixture[str]
):
    offline.setenv("BASE_MODEL_ID", PHI3_ID)

    code = dry_run_with(PHI3_UNARCHIVED, "--json")

    result, inputs = dry_run_inputs(capsys.readouterr().out)
    assert code == 0 and result["error"] is None
    # the model's defaults that are component inputs are in the job, as the service would apply them
    assert {
        k: inputs[k]
        for k in ("num_train_epochs", "learning_rate", "precision", "deepspeed_stage", "logging_steps", "apply_ort")
    } == {
        "num_train_epochs": "1",
        "learning_rate": "5e-6",
        "precision": "16",
        "deepspeed_stage": "2",
        "logging_steps": "10",
        "apply_ort": "false",
    }
    # and the two that are not are left out, and listed with their values
    assert "learning_rate_min" not in inputs and "learning_rate_max" not in inputs
    assert result["dropped_model_defaults"] == {"learning_rate_min": "5e-7", "learning_rate_max": "5e-5"}
    assert result["warnings"] == [
        "the base model's model_specific_defaults name what chat_completion_pipeline 0.0.82 has no input for; "
        "left out: learning_rate_max='5e-5', learning_rate_min='5e-7'"
    ]
    assert not any("model_specific_defaults" in a for a in result["assumptions"])
    assert result["inference_instance_type"] == "Standard_NC24ads_A100_v4"  # its list's NCv3 sizes are retiring


def test_a_dry_run_with_a_current_models_spec_drops_nothing(offline, capsys: pytest.CaptureFixture[str]):
    code = dry_run_with(PHI4_SPEC, "--json")

    result, inputs = dry_run_inputs(capsys.readouterr().out)
    assert code == 0
    assert result["dropped_model_defaults"] == {} and result["warnings"] == []
    assert inputs["deepspeed_stage"] == "3" and inputs["num_train_epochs"] == "1"
    assert result["pipeline_job"]["name"] == result["run_id"]
    assert result["assumptions"][0].startswith("1 GPU(s) per node assumed for Standard_NC24ads_A100_v4")


def test_a_dry_run_reads_the_model_as_az_ml_model_show_prints_it(offline, tmp_path, capsys):
    # given the YAML of `az ml model show`: every tag a string, model_specific_defaults a Python literal
    import yaml

    spec = yaml.safe_load(PHI3_UNARCHIVED.read_text())
    shown = {
        "name": spec["name"],
        "version": spec["version"],
        "stage": "Active",
        "tags": {key: value if isinstance(value, str) else repr(value) for key, value in spec["tags"].items()},
        "system_metadata": spec["system_metadata"],
    }
    model_file = tmp_path / "phi3.yaml"
    model_file.write_text(yaml.safe_dump(shown))
    offline.setenv("BASE_MODEL_ID", PHI3_ID)

    code = dry_run_with(model_file, "--json")

    result, inputs = dry_run_inputs(capsys.readouterr().out)
    assert code == 0
    assert inputs["num_train_epochs"] == "1" and inputs["learning_rate"] == "5e-6"
    assert result["dropped_model_defaults"] == {"learning_rate_min": "5e-7", "learning_rate_max": "5e-5"}


def test_a_model_file_other_than_base_model_id_is_used_and_said(offline, capsys: pytest.CaptureFixture[str]):
    offline.setenv("BASE_MODEL_ID", PHI3_ID)

    code = dry_run_with(PHI4_SPEC, "--json")

    result, _ = dry_run_inputs(capsys.readouterr().out)
    assert code == 0
    assert result["assumptions"][0] == (
        f"BASE_MODEL_ID is {PHI3_ID}; this dry run uses the model file's "
        "azureml://registries/azureml/models/Phi-4/versions/8: set BASE_MODEL_ID to it for the real run"
    )


def test_a_dry_run_without_json_prints_the_dropped_keys(offline, capsys: pytest.CaptureFixture[str]):
    offline.setenv("BASE_MODEL_ID", PHI3_ID)

    code = dry_run_with(PHI3_UNARCHIVED)

    out = capsys.readouterr().out
    assert code == 0
    assert "  warning: the base model's model_specific_defaults name what chat_completion_pipeline 0.0.82" in out
    assert "left out: learning_rate_max='5e-5', learning_rate_min='5e-7'" in out
    assert "  deployments would run on Standard_NC24ads_A100_v4" in out


@pytest.mark.parametrize("content", ["not: [valid", "- a list\n- not a model\n", "name: m\n"])
def test_an_unusable_model_file_exits_2(offline, tmp_path, capsys, content):
    model_file = tmp_path / "model.yaml"
    model_file.write_text(content)

    code = dry_run_with(model_file)

    assert code == 2
    assert "autopilot: invalid_input: " in capsys.readouterr().err


def test_what_a_model_file_does_not_say_is_listed_as_checked_at_submission(offline, tmp_path, capsys):
    # given a model's YAML that says nothing of its archive state or compute lists
    model_file = tmp_path / "shown.yaml"
    model_file.write_text("name: Phi-4\nversion: 8\ntags:\n  model_specific_defaults: \"{'num_train_epochs': 1}\"\n")

    code = dry_run_with(model_file, "--json")

    result, inputs = dry_run_inputs(capsys.readouterr().out)
    assert code == 0 and inputs["num_train_epochs"] == "1"
    assert [a for a in result["assumptions"] if a.startswith("the model file does not give")] == [
        "the model file does not give its archive state (isArchived): the registry's is applied at submission",
        "the model file does not give its fine-tune compute list: the registry's is applied at submission",
        "the model file does not give its inference compute list: the registry's is applied at submission",
    ]


def test_a_model_file_without_dry_run_is_bad_usage(offline, capsys: pytest.CaptureFixture[str]):
    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "azureml", "--model-file", str(PHI4_SPEC)])

    assert code == 2
    assert "--model-file goes with --dry-run" in capsys.readouterr().err


def test_a_dry_run_estimates_what_the_run_costs_from_the_price_table(offline, capsys: pytest.CaptureFixture[str]):
    # when the sample (214 training rows of 73.72 estimated tokens) is dry-run on the default A100 size
    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "azureml", "--dry-run", "--json"])

    # then the estimate is 214 x 3 epochs x 73.72 tokens, at Phi-4's throughput on one A100 and its hourly price
    estimate = json.loads(capsys.readouterr().out)["cost_estimate"]
    assert code == 0
    assert (estimate["instance_type"], estimate["gpus"], estimate["train_rows"], estimate["epochs"]) == (
        "Standard_NC24ads_A100_v4",
        1,
        214,
        3,
    )
    assert estimate["billed_tokens"] == round(214 * 3 * 73.72) == 47328
    tokens_per_second = 110e12 / (6 * 14.7e9)
    assert estimate["machine_hours"] == pytest.approx(47328 / tokens_per_second / 3600)
    assert estimate["cost"] == round(47328 / tokens_per_second / 3600 * 3.673, 2) == 0.04


def test_a_dry_run_over_max_run_cost_exits_1_with_the_figures(offline, capsys: pytest.CaptureFixture[str]):
    # given a budget below the sample's estimated $0.04
    offline.setenv("MAX_RUN_COST", "0.01")

    # when it is dry-run
    code = main(["run", str(SAMPLES / "ultrachat_sample.jsonl"), "--engine", "azureml", "--dry-run", "--json"])

    # then it is refused with over_budget and the figures, the job still shown for review
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert code == 1
    assert result["error"]["code"] == "over_budget"
    assert result["error"]["message"].startswith("estimated cost USD 0.04 exceeds MAX_RUN_COST 0.01")
    assert result["pipeline_job"] is not None
