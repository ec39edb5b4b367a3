"""The local engine's training worker, run for real as `python -m shared.engine.local.training JOB_DIR`.

Job folders are prepared here the way the engine prepares them (jobfiles.py), with the tiny base model (built
once per session) and the bundled ultrachat sample. Events go to a real HTTP webhook on loopback.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.domain.clock import utc_now
from shared.domain.finetune import FineTuneParameters
from shared.domain.jobs import JobStatus
from shared.domain.tags import RUN_TAG
from shared.engine.local.base_models import resolve_base_model
from shared.engine.local.jobfiles import JobError, JobFiles, JobMetricsFile, JobState, TrainingJob
from shared.engine.local.training.data import has_generation_markers
from shared.engine.local.training.launch import WORKER_MODULE, cuda_device_count, launch_command

REPO = Path(__file__).resolve().parents[2]
SAMPLE_LINES = (REPO / "samples" / "ultrachat_sample.jsonl").read_text(encoding="utf-8").splitlines()
TRAIN_LINES, TEST_LINES = SAMPLE_LINES[:200], SAMPLE_LINES[200:240]
TOPIC = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/test/providers/x/workspaces/test"

# The tiny model learns the sample's style in 50 steps (2 epochs of 200 rows at batch size 8), ~7 s on 2 cores.
FAST = {
    "learning_rate": 3e-3,
    "num_train_epochs": 2,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "max_seq_length": 256,
    "lora_r": 16,
    "lora_alpha": 32,
    "logging_steps": 5,
}


# -- helpers ---------------------------------------------------------------------------------------------


@dataclass
class Webhook:
    """An Event Grid webhook on loopback: records accepted events; answers 500 to the first `fail_first` POSTs."""

    fail_first: int = 0
    posts: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)  # the aeg-event-type header of each accepted POST
    url: str = ""

    def start(self) -> ThreadingHTTPServer:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts += 1
                if hook.posts <= hook.fail_first:
                    self.send_response(500)
                else:
                    hook.events.extend(json.loads(body))
                    hook.event_types.append(self.headers.get("aeg-event-type", ""))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_port}/runtime/webhooks/eventgrid?functionName=on_job_event"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def statuses(self) -> list[tuple[str, str | None]]:
        return [(e["eventType"].rsplit(".", 1)[-1], e["data"].get("runStatus")) for e in self.events]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    server = hook.start()
    yield hook
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/runtime/webhooks/eventgrid?functionName=on_job_event"


def make_job(
    root: Path,
    state_dir: Path,
    *,
    train: list[str] = TRAIN_LINES,
    test: list[str] = TEST_LINES,
    base_model: str = "tiny",
    webhook_url: str | None = None,
    **parameters: Any,
) -> JobFiles:
    """A job folder as the engine leaves it: job.json, data/, status.json queued."""
    files = JobFiles(root)
    files.data_dir.mkdir(parents=True)
    files.train_file.write_text("\n".join(train) + "\n", encoding="utf-8")
    files.test_file.write_text("\n".join(test) + "\n", encoding="utf-8")
    files.write_job(
        TrainingJob(
            name=root.name,
            base_model=base_model,
            parameters=FineTuneParameters(**parameters),
            tags={RUN_TAG: root.name, "dataset": "ultrachat_sample"},
            state_dir=str(state_dir),
            event_topic=TOPIC,
            webhook_url=webhook_url,
        )
    )
    now = utc_now()
    files.write_state(JobState(status=JobStatus.QUEUED, created_at=now, updated_at=now))
    return files


def start_worker(files: JobFiles) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", WORKER_MODULE, str(files.root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_worker(files: JobFiles, timeout_s: float = 180) -> tuple[int, str]:
    process = start_worker(files)
    output, _ = process.communicate(timeout=timeout_s)
    return process.returncode, output


def state_of(files: JobFiles) -> JobState:
    state = files.read_state()
    assert state is not None
    return state


def failure_of(files: JobFiles) -> JobError:
    """Run the worker on a job that must fail: it exits 1, and the error its state records."""
    exit_code, output = run_worker(files)
    state = state_of(files)
    assert exit_code == 1, output
    assert state.error is not None
    return state.error


def metrics_of(files: JobFiles) -> JobMetricsFile:
    metrics = files.read_metrics()
    assert metrics is not None
    return metrics


# -- fixtures: the tiny model once per session, one full training run shared by the tests that read it -----


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("engine-state")
    resolve_base_model("tiny", state / "models")
    return state


@dataclass
class CompletedRun:
    files: JobFiles
    exit_code: int
    output: str
    webhook: Webhook
    seconds: float


@pytest.fixture(scope="module")
def completed(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompletedRun]:
    # Given a job on the sample, whose webhook answers 500 to its first two deliveries
    hook = Webhook(fail_first=2)
    server = hook.start()
    files = make_job(tmp_path_factory.mktemp("jobs") / "ft-completes", state_dir, webhook_url=hook.url, **FAST)
    # When the worker runs it
    started = time.monotonic()
    exit_code, output = run_worker(files)
    yield CompletedRun(files, exit_code, output, hook, time.monotonic() - started)
    server.shutdown()
    server.server_close()


# -- a job that completes ----------------------------------------------------------------------------------


def test_a_job_completes_and_beats_its_base_model_on_the_test_split(completed: CompletedRun) -> None:
    # Then it completed, and the held-out loss went down clearly
    assert completed.exit_code == 0, completed.output
    state = state_of(completed.files)
    assert state.status == JobStatus.COMPLETED
    assert state.error is None
    assert state.started_at is not None and state.finished_at is not None
    assert state.started_at <= state.finished_at
    metrics = metrics_of(completed.files)
    assert metrics.base is not None and metrics.final is not None
    assert metrics.final.eval_loss < metrics.base.eval_loss - 1.0
    assert metrics.final.perplexity < metrics.base.perplexity
    assert metrics.final.mean_token_accuracy is not None and metrics.base.mean_token_accuracy is not None
    assert metrics.final.mean_token_accuracy > metrics.base.mean_token_accuracy
    assert metrics.train_loss is not None and metrics.train_loss > 0
    assert [step for step, _ in metrics.loss_curve] == list(range(5, 51, 5))
    assert [step for step, _ in metrics.eval_curve] == [25, 50]
    assert metrics.eval_curve[-1][1] == metrics.final.eval_loss
    assert metrics.train_tokens > 0 and metrics.train_seconds > 0
    assert metrics.tokens_per_second == pytest.approx(metrics.train_tokens / metrics.train_seconds, rel=0.01)
    assert metrics.device.startswith("cpu")
    assert "precision 16 not applicable on the CPU: training in fp32" in metrics.notes
    assert "DeepSpeed not applicable: no CUDA device (training on the CPU)" in metrics.notes


def test_progress_report_and_loss_curve_are_written(completed: CompletedRun) -> None:
    # Then progress reached the last step, and the report and the loss curve are there
    progress = completed.files.read_progress()
    assert progress is not None
    assert (progress.step, progress.max_steps, progress.epoch) == (50, 50, 2.0)
    assert completed.files.loss_curve_png.read_bytes().startswith(b"\x89PNG")
    report = completed.files.report_md.read_text(encoding="utf-8")
    metrics = metrics_of(completed.files)
    assert f"| eval loss | {metrics.base.eval_loss:.4f} | {metrics.final.eval_loss:.4f} |" in report
    assert "- steps: 50," in report
    log = completed.files.log_path.read_text(encoding="utf-8")
    for line in (
        "dataset: 200 training rows, 40 test rows",
        "device: cpu",
        "base model: tiny",
        "step 50/50",
        "DeepSpeed not applicable",
        "completed",
    ):
        assert line in log


def test_the_merged_model_is_a_plain_model_that_loads_and_generates(completed: CompletedRun) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # When the saved model is loaded like any Hugging Face model
    model_dir = completed.files.model_dir
    assert not (model_dir / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "My Acme printer will not charge. What should I do?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    # Then it generates, and it kept the training chat template
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert type(model).__name__ == "Phi3ForCausalLM"
    assert has_generation_markers(tokenizer.chat_template)


def test_mlflow_has_one_run_with_the_metrics_artifacts_and_logged_model(completed: CompletedRun, state_dir: Path):
    import mlflow
    from mlflow import MlflowClient

    from shared.engine.local.mlflow_store import configure_mlflow, experiment_id

    # When MLflow is pointed at the engine's state folder
    configure_mlflow(state_dir)
    client = MlflowClient()
    runs = client.search_runs([experiment_id("ft-autopilot")], f"tags.`{RUN_TAG}` = 'ft-completes'")
    # Then there is exactly one finished run for the job, with its params and metrics
    assert len(runs) == 1
    run = runs[0]
    metrics = metrics_of(completed.files)
    assert run.info.run_name == "ft-completes"
    assert run.info.status == "FINISHED"
    assert run.info.run_id == metrics.mlflow_run_id
    assert run.info.artifact_uri.startswith((state_dir / "mlflow" / "artifacts").resolve().as_uri())
    assert run.data.params["learning_rate"] == "0.003"
    assert run.data.params["base_model"] == "tiny"
    assert run.data.metrics["base_eval_loss"] == metrics.base.eval_loss
    assert run.data.metrics["final_eval_loss"] == metrics.final.eval_loss
    assert run.data.metrics["base_perplexity"] == metrics.base.perplexity
    assert run.data.metrics["final_mean_token_accuracy"] == metrics.final.mean_token_accuracy
    assert run.data.metrics["train_loss"] == metrics.train_loss
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == metrics.loss_curve
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"loss_curve.png", "report.md"}
    # And the merged model is logged, ready to be registered
    assert metrics.mlflow_model_uri is not None and metrics.mlflow_model_uri.startswith("models:/m-")
    logged = mlflow.get_logged_model(metrics.mlflow_model_uri.removeprefix("models:/"))
    assert logged.source_run_id == run.info.run_id


# -- events ------------------------------------------------------------------------------------------------


def test_events_report_running_then_completed_even_through_a_failing_webhook(completed: CompletedRun) -> None:
    # Then, after two 500s retried, the webhook got Running, then Completed and RunCompleted, once each
    hook = completed.webhook
    assert hook.posts == 2 + 3
    assert hook.statuses() == [
        ("RunStatusChanged", "Running"),
        ("RunStatusChanged", "Completed"),
        ("RunCompleted", None),
    ]
    assert hook.event_types == ["Notification"] * 3
    for event in hook.events:
        data = event["data"]
        assert event["subject"] == f"experiments/{data['experimentId']}/runs/ft-completes"
        assert event["topic"] == TOPIC
        assert data["runId"] == "ft-completes"
        assert data["runType"] == "azureml.PipelineRun"
        assert data["runTags"] == {RUN_TAG: "ft-completes", "dataset": "ultrachat_sample"}
        assert data["experimentName"] == "ft-autopilot"


def test_a_dead_webhook_does_not_prevent_completion(state_dir: Path, tmp_path: Path) -> None:
    # Given a short job whose webhook port is closed
    files = make_job(
        tmp_path / "ft-dead-webhook",
        state_dir,
        webhook_url=closed_port_url(),
        **{**FAST, "max_steps": 3, "evaluation_strategy": "disable"},
    )
    # When the worker runs it
    exit_code, output = run_worker(files)
    # Then the job completes all the same, and says the events were not delivered
    assert exit_code == 0, output
    assert state_of(files).status == JobStatus.COMPLETED
    assert (files.model_dir / "config.json").exists()
    assert "could not be delivered" in files.log_path.read_text(encoding="utf-8")


# -- failures with stable codes ----------------------------------------------------------------------------


def test_too_few_training_rows_fail_with_too_few_examples(state_dir: Path, tmp_path: Path, webhook: Webhook):
    # Given 5 training rows
    files = make_job(tmp_path / "ft-few", state_dir, train=TRAIN_LINES[:5], webhook_url=webhook.url, **FAST)
    # When the worker runs
    error = failure_of(files)
    # Then the job failed with too_few_examples, and the webhook heard Running then Failed
    assert state_of(files).status == JobStatus.FAILED
    assert (error.code, error.message) == (
        "too_few_examples",
        "5 training rows: fine-tuning needs at least 10",
    )
    assert webhook.statuses() == [("RunStatusChanged", "Running"), ("RunStatusChanged", "Failed")]


def test_assistant_turns_cut_off_by_max_seq_length_fail_with_no_assistant_tokens(state_dir: Path, tmp_path: Path):
    # Given a max_seq_length shorter than every conversation's first user turn
    files = make_job(tmp_path / "ft-short", state_dir, **{**FAST, "max_seq_length": 5})
    # When the worker runs
    error = failure_of(files)
    # Then it failed with Azure's message
    assert error.code == "no_assistant_tokens"
    assert error.message.startswith("No assistant tokens found after preprocessing. Please increase max_seq_len")
    assert not files.model_dir.exists()


def test_a_missing_local_base_model_folder_fails_with_base_model_unavailable(state_dir: Path, tmp_path: Path):
    # Given a base model folder that does not exist
    files = make_job(tmp_path / "ft-nobase", state_dir, base_model=str(tmp_path / "no-such-model"), **FAST)
    # When the worker runs
    error = failure_of(files)
    # Then it failed with base_model_unavailable
    assert error.code == "base_model_unavailable"
    assert "no-such-model" in error.message


def test_a_chat_template_without_generation_markers_fails_with_no_generation_markers(state_dir: Path, tmp_path: Path):
    # Given a copy of the tiny model whose chat template has no {% generation %} block (only add_generation_prompt)
    base = tmp_path / "plain-template"
    shutil.copytree(state_dir / "models" / "tiny", base)
    (base / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
        encoding="utf-8",
    )
    files = make_job(tmp_path / "ft-nomarkers", state_dir, base_model=str(base), **FAST)
    # When the worker runs
    error = failure_of(files)
    # Then it failed with no_generation_markers
    assert error.code == "no_generation_markers"


def test_anything_else_fails_with_training_failed_and_a_traceback_in_the_log(state_dir: Path, tmp_path: Path):
    # Given a training file with a line that is not JSON (the engine never copies one; the worker still copes)
    files = make_job(tmp_path / "ft-broken", state_dir, train=[*TRAIN_LINES[:20], "{not json"], **FAST)
    # When the worker runs
    error = failure_of(files)
    # Then it failed with training_failed, the exception type and first line as the message
    assert error.code == "training_failed"
    assert error.message.startswith("JSONDecodeError: ")
    assert "Traceback (most recent call last)" in files.log_path.read_text(encoding="utf-8")


# -- cancel ------------------------------------------------------------------------------------------------


def test_sigterm_while_training_ends_the_job_canceled_within_seconds(state_dir: Path, tmp_path: Path, webhook: Webhook):
    # Given a long job that is running and has made a step
    files = make_job(tmp_path / "ft-cancel", state_dir, webhook_url=webhook.url, **{**FAST, "max_steps": 100_000})
    process = start_worker(files)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        progress = files.read_progress()
        if state_of(files).status == JobStatus.RUNNING and progress is not None and progress.step >= 1:
            break
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[0]
    # When it gets SIGTERM
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    # Then it exited within a few seconds, recorded canceled, and said so to the webhook
    assert time.monotonic() - sent < 5
    assert process.returncode in (0, 143), output
    state = state_of(files)
    assert state.status == JobStatus.CANCELED
    assert state.finished_at is not None
    assert state.error is None
    progress = files.read_progress()
    assert progress is not None and 1 <= progress.step < 100_000
    assert not files.model_dir.exists()
    assert webhook.statuses() == [("RunStatusChanged", "Running"), ("RunStatusChanged", "Canceled")]


def test_sigterm_before_training_starts_also_ends_the_job_canceled(state_dir: Path, tmp_path: Path) -> None:
    # Given a job whose worker has just reported running (it is importing torch and loading the model)
    files = make_job(tmp_path / "ft-cancel-early", state_dir, **FAST)
    process = start_worker(files)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and state_of(files).status != JobStatus.RUNNING:
        time.sleep(0.05)
    # When it gets SIGTERM
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    # Then it ends canceled without having trained a step
    assert process.returncode == 143, output
    assert state_of(files).status == JobStatus.CANCELED
    assert files.read_progress() is None
    assert "canceled (SIGTERM)" in files.log_path.read_text(encoding="utf-8")


# -- launch command ----------------------------------------------------------------------------------------


def test_the_launch_command_runs_the_worker_module_once_or_once_per_gpu(tmp_path: Path) -> None:
    # Given this machine's CUDA devices (none on a CPU box)
    gpus = cuda_device_count()
    # When the engine asks how to start a worker
    command = launch_command(tmp_path / "ft-x", python="/venv/bin/python")
    # Then it is one Python process running the worker module, or accelerate with one process per GPU
    worker = ["-m", WORKER_MODULE, str(tmp_path / "ft-x")]
    if gpus > 1:
        launcher = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus)]
        assert command == ["/venv/bin/python", *launcher, *worker]
    else:
        assert command == ["/venv/bin/python", *worker]


def test_generation_markers_are_the_tag_not_the_word() -> None:
    assert has_generation_markers("{% generation %}{{ m }}{% endgeneration %}")
    assert has_generation_markers("{%- generation -%}{{ m }}{%- endgeneration %}")
    assert not has_generation_markers("{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert not has_generation_markers(None)


def test_parameters_keep_their_pipeline_meaning_in_the_trainer_and_lora_configs(tmp_path: Path) -> None:
    from shared.engine.local.training.configs import deepspeed_config, lora_config, sft_config

    # Given chat_completion_pipeline parameters, none of them at its default
    params = FineTuneParameters(
        num_train_epochs=4,
        max_steps=120,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=3,
        gradient_accumulation_steps=5,
        learning_rate=1e-4,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=7,
        weight_decay=0.01,
        max_seq_length=512,
        lora_r=4,
        lora_alpha=16,
        lora_dropout=0.1,
        seed=7,
        evaluation_strategy="steps",
        logging_steps=3,
    )
    # When they become the trainer's configuration on a CPU
    config = sft_config(params, output_dir=tmp_path, device="cpu")
    lora = lora_config(params)
    # Then each keeps its meaning
    assert (config.num_train_epochs, config.max_steps) == (4, 120)
    assert (config.per_device_train_batch_size, config.per_device_eval_batch_size) == (2, 3)
    assert config.gradient_accumulation_steps == 5
    assert (config.learning_rate, config.lr_scheduler_type.value) == (1e-4, "constant_with_warmup")
    assert (config.warmup_steps, config.weight_decay) == (7, 0.01)
    assert config.max_length == 512
    assert (config.seed, config.data_seed) == (7, 7)
    assert (config.eval_strategy.value, config.eval_steps, config.logging_steps) == ("steps", 3, 3)
    assert config.assistant_only_loss is True
    assert config.save_strategy.value == "no"
    # and what does not apply on a CPU is off: mixed precision, activation checkpointing, DeepSpeed
    assert (config.bf16, config.fp16, config.use_cpu) == (False, False, True)
    assert config.activation_checkpointing is False
    assert config.deepspeed is None
    assert (config.report_to, config.disable_tqdm, config.dataloader_num_workers) == ([], True, 0)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.target_modules) == (4, 16, 0.1, "all-linear")
    # and "disable" turns evaluation off during training
    disabled = sft_config(
        params.model_copy(update={"evaluation_strategy": "disable"}), output_dir=tmp_path, device="cpu"
    )
    assert disabled.eval_strategy.value == "no"
    assert deepspeed_config("3")["zero_optimization"]["stage"] == 3
    assert deepspeed_config("2")["zero_optimization"] == {
        "stage": 2,
        "overlap_comm": True,
        "contiguous_gradients": True,
    }
