"""The local engine's training worker: `python -m shared.engine.local.training JOB_DIR`.

The engine prepares JOB_DIR (jobfiles.py: job.json, data/train.jsonl, data/test.jsonl, status.json "queued")
and starts this process detached (`launch_command`). The worker then owns the job folder:

    running    status.json (pid, started_at), events, job.log lines
    checks     too_few_examples, base_model_unavailable, no_generation_markers, no_assistant_tokens
    base eval  the base model on the test split (loss, perplexity, token accuracy) -> metrics.json
    training   TRL SFTTrainer, assistant-only loss, LoRA (peft) or full fine-tuning; progress.json per step
    final eval the trained model on the same split
    output     model/ (merged, a plain Hugging Face folder), adapter/ (LoRA), loss_curve.png, report.md,
               one MLflow run with params, metrics, artifacts and the logged merged model
    completed  status.json and events; failed / canceled likewise, with a stable error code

SIGTERM cancels: between steps a callback stops the trainer; anywhere else (model loading, evaluation) the
signal handler raises JobCanceled. Either way the job ends `canceled`, with events, exit code 143.

The worker speaks the parameter names of Azure ML's chat_completion_pipeline (shared.finetune) with the same
meanings; what does not apply on this machine (fp16 on a CPU, DeepSpeed without CUDA, checkpoints) is written to
job.log and metrics.json notes. With several CUDA devices the engine launches it through `accelerate launch`;
then only rank 0 writes the job folder, events and MLflow.

Heavy imports (torch, transformers, trl, peft, mlflow, matplotlib) happen inside functions: the engine imports
this module for `launch_command`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from shared.engine.base import RUN_TAG, JobStatus
from shared.engine.local.events import EventDelivery, run_events
from shared.engine.local.jobfiles import (
    EvalMetrics,
    JobError,
    JobFiles,
    JobMetricsFile,
    JobState,
    Progress,
    TrainingJob,
    utc_now,
)
from shared.finetune import FineTuneParameters

logger = logging.getLogger(__name__)

WORKER_MODULE = "shared.engine.local.training"
MIN_TRAINING_ROWS = 10  # what chat_completion_pipeline requires
CANCELED_EXIT_CODE = 143  # 128 + SIGTERM
EVENT_DRAIN_S = 60.0  # how long a finished worker waits for a slow webhook before it exits anyway
PROGRESS_EVERY_S = 0.5
# {% generation %} in any whitespace-control spelling ({%- generation -%} ...); not the word alone, which
# `add_generation_prompt` also contains.
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
EVAL_STRATEGIES = {"epoch": "epoch", "steps": "steps", "disable": "no"}


def launch_command(job_dir: Path, python: str = sys.executable) -> list[str]:
    """The command line that runs the worker for `job_dir`: one process, or one per GPU through accelerate."""
    worker = ["-m", WORKER_MODULE, str(job_dir)]
    gpus = cuda_device_count()
    if gpus > 1:
        return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus), *worker]
    return [python, *worker]


def cuda_device_count() -> int:
    """CUDA devices here, without importing torch where there is plainly no NVIDIA device (the usual laptop/CI)."""
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # no usable torch: one CPU process
        return 0


class JobCanceled(BaseException):
    """SIGTERM arrived: the job ends as canceled.

    A BaseException, like KeyboardInterrupt, so that no library's `except Exception` swallows it."""


class JobFailure(Exception):
    """The job cannot succeed; `code` is stable (it goes to status.json)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def has_generation_markers(chat_template: str | None) -> bool:
    return bool(chat_template) and GENERATION_MARKER.search(chat_template) is not None


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """The rows of a validated ultrachat JSONL file, reduced to {"messages": [{"role", "content"}, ...]}.

    Everything else is dropped: with a `prompt` column TRL would take its prompt/completion path.
    """
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.strip():
                row = json.loads(line)
                rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]})
    return rows


# -- cancellation and events ---------------------------------------------------------------------------


class Cancellation:
    """SIGTERM/SIGINT handling. While the trainer runs steps (`deferred`), the first signal only sets the flag and
    the callback stops training after the current step; otherwise (or on a second signal) the handler raises."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.armed = False  # until the job is set up, a signal is only noted (and acted on by `check`)
        self.deferred = False
        self.finishing = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def check(self) -> None:
        if self.requested.is_set():
            raise JobCanceled("cancel requested")

    def _handle(self, signum: int, frame: Any) -> None:
        again = self.requested.is_set()
        self.requested.set()
        if self.finishing or not self.armed or (self.deferred and not again):
            return
        raise JobCanceled(signal.Signals(signum).name)


class EventSender:
    """Delivers status-change events in order on a background thread: a slow or dead webhook never holds up
    training. `close` waits (bounded) for what is queued."""

    def __init__(self, job: TrainingJob) -> None:
        self._job = job
        self._delivery = EventDelivery(job.webhook_url)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._undelivered = 0
        self._thread: threading.Thread | None = None
        if job.webhook_url:
            self._thread = threading.Thread(target=self._run, name="job-events", daemon=True)
            self._thread.start()

    def send(self, status: JobStatus) -> None:
        if self._thread is None:
            return
        job = self._job
        for event in run_events(
            job_name=job.name, status=status, tags=job.tags, experiment_name=job.experiment_name, topic=job.event_topic
        ):
            self._queue.put(event)

    def close(self, timeout_s: float = EVENT_DRAIN_S) -> bool:
        """True when every event was delivered (or there was nowhere to deliver them)."""
        if self._thread is None:
            return True
        self._queue.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive() and self._undelivered == 0

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            if not self._delivery.deliver(event):
                self._undelivered += 1


# -- the worker -----------------------------------------------------------------------------------------


class TrainingWorker:
    def __init__(self, files: JobFiles) -> None:
        self.files = files
        self.main = int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun only rank 0 reports
        self.cancel = Cancellation()
        self.metrics = JobMetricsFile()
        self.state: JobState | None = None
        self.events: EventSender | None = None
        self._mlflow_run = None
        self._callback: Any = None  # the TrainerCallback (make_callback), once the trainer exists
        self._last_progress = 0.0

    # reporting (rank 0 only)

    def log(self, message: str) -> None:
        logger.info("%s", message)
        if self.main:
            self.files.log(message)

    def note(self, message: str) -> None:
        self.metrics.notes.append(message)
        self.log(message)

    def write_metrics(self) -> None:
        if self.main:
            self.files.write_metrics(self.metrics)

    def write_progress(self, step: int, max_steps: int, epoch: float, loss: float | None) -> None:
        self._last_progress = time.monotonic()
        if self.main:
            self.files.write_progress(
                Progress(step=step, max_steps=max_steps, epoch=epoch, loss=loss, updated_at=utc_now())
            )

    def set_status(self, status: JobStatus, error: JobError | None = None) -> None:
        assert self.state is not None
        now = utc_now()
        update: dict[str, Any] = {"status": status, "updated_at": now, "error": error}
        if status == JobStatus.RUNNING:
            update |= {"started_at": now, "pid": os.getpid()}
        elif status.is_terminal:
            update["finished_at"] = now
        self.state = self.state.model_copy(update=update)
        if self.main:
            self.files.write_state(self.state)
            if self.events is not None:
                self.events.send(status)

    # the job

    def run(self) -> int:
        self.cancel.install()
        try:
            job = self.files.read_job()
        except Exception as exc:  # no job spec: record the failure where the engine looks
            now = utc_now()
            self.state = JobState(
                status=JobStatus.FAILED,
                created_at=now,
                updated_at=now,
                finished_at=now,
                error=JobError(code="training_failed", message=f"unreadable job.json: {exc}"),
            )
            if self.main:
                self.files.write_state(self.state)
            return 1
        previous = self.files.read_state()
        if previous is not None and previous.status.is_terminal:
            self.log(f"not starting: the job is {previous.status} already")
            return 0
        now = utc_now()
        self.state = previous or JobState(status=JobStatus.QUEUED, created_at=now, updated_at=now)
        self.events = EventSender(job) if self.main else None
        exit_code, outcome = 1, JobStatus.FAILED
        try:
            self.set_status(JobStatus.RUNNING)
            self.cancel.armed = True
            self.log(f"started: worker pid {os.getpid()}, job {job.name}")
            self.cancel.check()
            self.train(job)
            self.cancel.finishing = True
            self._end_mlflow(JobStatus.COMPLETED)  # before the status: whoever reacts to it finds a finished run
            self.set_status(JobStatus.COMPLETED)
            self.log("completed")
            exit_code, outcome = 0, JobStatus.COMPLETED
        except JobCanceled:
            self.cancel.finishing = True
            self.log("canceled (SIGTERM): stopping")
            self.set_status(JobStatus.CANCELED)
            exit_code, outcome = CANCELED_EXIT_CODE, JobStatus.CANCELED
        except JobFailure as exc:
            self.cancel.finishing = True
            self.log(f"failed: {exc.code}: {exc.message}")
            self.set_status(JobStatus.FAILED, JobError(code=exc.code, message=exc.message))
        except Exception as exc:  # anything else is training_failed, with the traceback in job.log
            self.cancel.finishing = True
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".strip()
            self.log(f"failed: training_failed: {message}\n{traceback.format_exc()}")
            self.set_status(JobStatus.FAILED, JobError(code="training_failed", message=message.rstrip(": ")))
        finally:
            self.cancel.finishing = True
            self._end_mlflow(outcome)
            for scratch in (".trainer", ".model-partial"):
                shutil.rmtree(self.files.root / scratch, ignore_errors=True)
            if self.events is not None and not self.events.close():
                self.log(
                    "some status events could not be delivered to the webhook (the engine's reconciler "
                    "reads status.json)"
                )
        return exit_code

    def train(self, job: TrainingJob) -> None:
        params = job.parameters
        train_rows = read_conversations(self.files.train_file)
        test_rows = read_conversations(self.files.test_file)
        self.log(f"dataset: {len(train_rows)} training rows, {len(test_rows)} test rows")
        if len(train_rows) < MIN_TRAINING_ROWS:
            raise JobFailure(
                "too_few_examples",
                f"{len(train_rows)} training rows: fine-tuning needs at least {MIN_TRAINING_ROWS}",
            )

        import torch
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        torch.set_num_threads(os.cpu_count() or 1)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.metrics.device = _describe_device(torch, device)
        self.log(f"device: {self.metrics.device}")

        folder = self._resolve_base_model(job)
        tokenizer = self._load_tokenizer(folder)
        dtype = self._precision(params, device, torch)
        deepspeed_config = self._deepspeed(params, device)
        self._note_parameters(params)

        from transformers import set_seed

        set_seed(params.seed)
        model = self._load_model(folder, dtype)
        self.log(f"base model: {job.base_model} ({folder}), {model.num_parameters():,} parameters, dtype {dtype}")
        self.cancel.check()

        trainer = self._trainer(params, model, tokenizer, train_rows, test_rows, device, deepspeed_config)
        evaluate = trainer.eval_dataset is not None
        self._start_mlflow(job, folder, len(train_rows), len(test_rows))

        if evaluate:
            self.log("evaluating the base model on the test split")
            self.metrics.base = self._evaluate(trainer)
            self.log(f"base model: {_describe_eval(self.metrics.base)}")
            self._log_eval_to_mlflow("base", self.metrics.base)
            self.write_metrics()
        self.cancel.check()

        self.log("training")
        started = time.monotonic()
        output = trainer.train()
        # the time of the steps: evaluations the trainer ran in between are not training
        self.metrics.train_seconds = round(time.monotonic() - started - self._callback.eval_seconds, 3)
        self.cancel.check()  # a SIGTERM during the steps stopped the trainer early
        self.metrics.train_loss = float(output.training_loss)
        self.metrics.train_tokens = int(getattr(trainer, "_total_train_tokens", 0) or self._callback.num_tokens)
        if self.metrics.train_seconds > 0:
            self.metrics.tokens_per_second = round(self.metrics.train_tokens / self.metrics.train_seconds, 1)
        self.log(
            f"trained {trainer.state.global_step} steps in {self.metrics.train_seconds:.1f} s: "
            f"train loss {self.metrics.train_loss:.4f}, {self.metrics.train_tokens} tokens, "
            f"{self.metrics.tokens_per_second:.1f} tokens/s"
        )

        if evaluate:
            self.metrics.final = self._final_eval(trainer)
            self.log(f"fine-tuned model: {_describe_eval(self.metrics.final)}")
            self._log_eval_to_mlflow("final", self.metrics.final)
            if not self.metrics.eval_curve or self.metrics.eval_curve[-1][0] != trainer.state.global_step:
                self.metrics.eval_curve.append((trainer.state.global_step, self.metrics.final.eval_loss))
        self.write_metrics()
        self.cancel.check()

        merged = self._save_model(trainer, tokenizer, folder, dtype, params)
        if self.main:
            write_loss_curve(self.metrics, self.files.loss_curve_png, job.name)
            self.files.report_md.write_text(
                render_report(job, self.metrics, trainer.state.global_step), encoding="utf-8"
            )
            # MLflow names the logged model after name_or_path: the fine-tuned model, not a staging or base folder
            merged.name_or_path = merged.config._name_or_path = tokenizer.name_or_path = f"ft-autopilot/{job.name}"
            self._finish_mlflow(merged, tokenizer)
        self.write_metrics()

    # steps of train()

    def _resolve_base_model(self, job: TrainingJob) -> str:
        from shared.engine.local.base_models import BaseModelUnavailable, resolve_base_model

        try:
            return resolve_base_model(job.base_model, Path(job.state_dir) / "models")
        except BaseModelUnavailable as exc:
            raise JobFailure(BaseModelUnavailable.code, str(exc)) from exc

    def _load_tokenizer(self, folder: str):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise JobFailure("base_model_unavailable", f"cannot load the tokenizer from {folder}: {exc}") from exc
        if not has_generation_markers(tokenizer.chat_template):
            raise JobFailure(
                "no_generation_markers",
                "the base model's chat template has no {% generation %} markers, which assistant-only loss needs",
            )
        return tokenizer

    def _load_model(self, folder: str, dtype):
        from transformers import AutoModelForCausalLM

        try:
            return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise JobFailure("base_model_unavailable", f"cannot load the base model from {folder}: {exc}") from exc

    def _precision(self, params: FineTuneParameters, device: str, torch):
        if params.precision == "16" and device == "cuda":
            if torch.cuda.is_bf16_supported():
                self.log("precision 16: bf16 mixed precision")
                return torch.bfloat16
            self.log("precision 16: fp16 mixed precision (no bf16 on this GPU)")
            return torch.float32  # fp16 autocast over fp32 weights: the gradient scaler needs fp32 master weights
        if params.precision == "16":
            self.note("precision 16 not applicable on the CPU: training in fp32")
        else:
            self.log("precision 32: fp32")
        return torch.float32

    def _deepspeed(self, params: FineTuneParameters, device: str) -> dict[str, Any] | None:
        if not params.apply_deepspeed:
            return None
        if device != "cuda":
            self.note("DeepSpeed not applicable: no CUDA device (training on the CPU)")
            return None
        try:
            import deepspeed  # noqa: F401
        except Exception as exc:  # ImportError, or a deepspeed that cannot find its CUDA toolchain
            self.note(f"DeepSpeed not applicable: deepspeed is not importable ({type(exc).__name__}: {exc})")
            return None
        self.note(f"DeepSpeed ZeRO stage {params.deepspeed_stage}")
        return deepspeed_config(params.deepspeed_stage)

    def _note_parameters(self, params: FineTuneParameters) -> None:
        self.note(
            f"no checkpoints are kept (save_strategy=no): save_total_limit={params.save_total_limit} does not apply"
        )
        if params.apply_lora and not params.merge_lora_weights:
            self.note(
                "merge_lora_weights=false: the LoRA adapter is in adapter/; model/ (what is registered and "
                "served) is still the merged model"
            )

    def _trainer(self, params, model, tokenizer, train_rows, test_rows, device, deepspeed):
        from datasets import Dataset
        from trl import SFTTrainer

        peft_config = lora_config(params) if params.apply_lora else None
        evaluate = bool(test_rows)
        if not evaluate:
            self.note("no test rows: evaluation skipped")
        args = sft_config(
            params, output_dir=self.files.root / ".trainer", device=device, evaluate=evaluate, deepspeed=deepspeed
        )
        self._callback = make_callback(self)
        try:
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(train_rows),
                eval_dataset=Dataset.from_list(test_rows) if evaluate else None,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[self._callback],
            )
        except RuntimeError as exc:
            if "no assistant tokens" in str(exc):
                raise JobFailure("no_assistant_tokens", _NO_ASSISTANT_TOKENS) from exc
            raise
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; the callback logs them
        kept = len(trainer.train_dataset)
        if kept == 0 or not any(label != -100 for row in trainer.train_dataset["labels"] for label in row):
            raise JobFailure("no_assistant_tokens", _NO_ASSISTANT_TOKENS)
        if kept < len(train_rows):
            self.note(
                f"{len(train_rows) - kept} of {len(train_rows)} training rows have no assistant tokens within "
                f"max_seq_length={params.max_seq_length} and were left out"
            )
        if evaluate and len(trainer.eval_dataset) == 0:
            from transformers.trainer_utils import IntervalStrategy

            self.note(
                f"no test row has assistant tokens within max_seq_length={params.max_seq_length}: evaluation skipped"
            )
            trainer.eval_dataset = None
            trainer.args.eval_strategy = IntervalStrategy.NO
        trainable, total = _parameter_counts(trainer.model)
        self.log(
            f"{'LoRA' if params.apply_lora else 'full fine-tuning'}: {trainable:,} of {total:,} parameters "
            f"trainable; {kept} training rows, max_length {params.max_seq_length}"
        )
        return trainer

    def _evaluate(self, trainer) -> EvalMetrics:
        self._callback.phase = "eval"
        try:
            return eval_metrics(trainer.evaluate())
        finally:
            self._callback.phase = "train"

    def _final_eval(self, trainer) -> EvalMetrics:
        last = self._callback.last_eval
        if last is not None and last[0] == trainer.state.global_step:
            return last[1]  # the trainer evaluated right after the last step already
        self.log("evaluating the fine-tuned model on the test split")
        return self._evaluate(trainer)

    def _save_model(self, trainer, tokenizer, folder: str, dtype, params: FineTuneParameters):
        """model/: the merged model and tokenizer (written to a staging folder, then renamed). Returns the model."""
        from transformers import AutoModelForCausalLM

        staging = self.files.root / ".model-partial"
        shutil.rmtree(staging, ignore_errors=True)
        merged = None
        if params.apply_lora:
            adapter = self.files.root / "adapter"
            trainer.save_model(str(adapter))  # every rank: gathers ZeRO-3 shards where there are any
            if self.main:
                from peft import PeftModel

                base = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
                merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
                merged.save_pretrained(staging)
                (adapter / "training_args.bin").unlink(missing_ok=True)
        else:
            trainer.save_model(str(staging))
            if self.main:
                merged = AutoModelForCausalLM.from_pretrained(staging, dtype=dtype)
        if not self.main:
            return None
        (staging / "training_args.bin").unlink(missing_ok=True)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(self.files.model_dir, ignore_errors=True)
        os.replace(staging, self.files.model_dir)
        self.log(f"saved the {'merged ' if params.apply_lora else ''}model to {self.files.model_dir}")
        return merged

    # MLflow (rank 0)

    def _start_mlflow(self, job: TrainingJob, folder: str, train_rows: int, test_rows: int) -> None:
        if not self.main:
            return
        import mlflow

        from shared.engine.local.tracking import configure_mlflow

        configure_mlflow(Path(job.state_dir), job.experiment_name)
        run = mlflow.start_run(run_name=job.name, tags={**job.tags, RUN_TAG: job.name, "base_model": job.base_model})
        self._mlflow_run = run
        self.metrics.mlflow_run_id = run.info.run_id
        mlflow.log_params(
            {
                **job.parameters.model_dump(mode="json"),
                "base_model": job.base_model,
                "base_model_folder": folder,
                "device": self.metrics.device,
                "train_rows": train_rows,
                "test_rows": test_rows,
            }
        )
        self.log(f"MLflow run {run.info.run_id} in experiment {job.experiment_name}")

    def mlflow_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        """Per-step metrics: a tracking hiccup is logged, never fatal."""
        if self._mlflow_run is None:
            return
        try:
            import mlflow

            mlflow.log_metrics(values, step=step)
        except Exception as exc:  # a tracking hiccup must not end a training run
            logger.warning("MLflow metrics not logged: %s", exc)

    def _log_eval_to_mlflow(self, prefix: str, metrics: EvalMetrics) -> None:
        values = {f"{prefix}_eval_loss": metrics.eval_loss, f"{prefix}_perplexity": metrics.perplexity}
        if metrics.mean_token_accuracy is not None:
            values[f"{prefix}_mean_token_accuracy"] = metrics.mean_token_accuracy
        self.mlflow_metrics(values)

    def _finish_mlflow(self, merged, tokenizer) -> None:
        if self._mlflow_run is None:
            return
        import mlflow
        import torch
        import transformers

        m = self.metrics
        summary = {
            "train_loss": m.train_loss,
            "train_tokens": float(m.train_tokens),
            "train_seconds": m.train_seconds,
            "tokens_per_second": m.tokens_per_second,
        }
        mlflow.log_metrics({k: v for k, v in summary.items() if v is not None})
        mlflow.log_artifact(str(self.files.loss_curve_png))
        mlflow.log_artifact(str(self.files.report_md))
        started = time.monotonic()
        info = mlflow.transformers.log_model(
            transformers_model={"model": merged, "tokenizer": tokenizer},
            name="model",
            task="llm/v1/chat",
            pip_requirements=[
                f"transformers=={transformers.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
                "accelerate",
            ],
        )
        m.mlflow_model_uri = info.model_uri
        self.log(f"logged the model to MLflow as {info.model_uri} in {time.monotonic() - started:.1f} s")

    def _end_mlflow(self, outcome: JobStatus) -> None:
        if self._mlflow_run is None:
            return
        try:
            import mlflow

            status = {JobStatus.COMPLETED: "FINISHED", JobStatus.CANCELED: "KILLED"}.get(outcome, "FAILED")
            mlflow.end_run(status=status)
        except Exception as exc:  # the job's outcome is recorded already
            logger.warning("MLflow run not closed: %s", exc)
        self._mlflow_run = None


_NO_ASSISTANT_TOKENS = (
    "No assistant tokens found after preprocessing. Please increase max_seq_len "
    "(every training row's assistant turns fall beyond max_seq_length)"
)


# -- configuration (pure functions of the parameters) -----------------------------------------------------


def sft_config(
    params: FineTuneParameters,
    *,
    output_dir: Path,
    device: str,
    evaluate: bool = True,
    deepspeed: dict[str, Any] | None = None,
):
    """chat_completion_pipeline's parameters as TRL's SFTConfig, with the same meanings."""
    from trl import SFTConfig

    cuda = device == "cuda"
    bf16 = fp16 = False
    if params.precision == "16" and cuda:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        fp16 = not bf16
    eval_strategy = EVAL_STRATEGIES[params.evaluation_strategy] if evaluate else "no"
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=params.num_train_epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_train_batch_size,
        per_device_eval_batch_size=params.per_device_eval_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler_type,
        warmup_steps=params.warmup_steps,
        weight_decay=params.weight_decay,
        max_length=params.max_seq_length,
        assistant_only_loss=True,
        seed=params.seed,
        data_seed=params.seed,
        eval_strategy=eval_strategy,
        eval_steps=params.logging_steps if eval_strategy == "steps" else None,
        logging_strategy="steps",
        logging_steps=params.logging_steps,
        save_strategy="no",
        bf16=bf16,
        fp16=fp16,
        use_cpu=not cuda,
        activation_checkpointing=False,  # TRL turns it on by default; on a CPU it only costs time
        deepspeed=deepspeed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
    )


def lora_config(params: FineTuneParameters):
    from peft import LoraConfig

    return LoraConfig(
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def deepspeed_config(stage: str) -> dict[str, Any]:
    """A ZeRO config that leaves batch sizes, precision and clipping to the trainer's arguments ("auto")."""
    zero: dict[str, Any] = {"stage": int(stage), "overlap_comm": True, "contiguous_gradients": True}
    if stage == "3":
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def eval_metrics(values: dict[str, float]) -> EvalMetrics:
    loss = float(values["eval_loss"])
    if not math.isfinite(loss):
        raise JobFailure("training_failed", f"evaluation loss is not finite ({loss})")
    accuracy = values.get("eval_mean_token_accuracy")
    return EvalMetrics(
        eval_loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        mean_token_accuracy=float(accuracy) if accuracy is not None else None,
    )


def make_callback(worker: TrainingWorker):
    """A TrainerCallback (transformers imported lazily) that reports progress and honours cancellation."""
    from transformers import TrainerCallback

    class WorkerCallback(TrainerCallback):
        def __init__(self) -> None:
            self.phase = "train"
            self.num_tokens = 0
            self.eval_seconds = 0.0
            self.last_eval: tuple[int, EvalMetrics] | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            worker.cancel.deferred = True
            worker.write_progress(0, state.max_steps, 0.0, None)
            worker.log(f"training for {state.max_steps} steps")

        def on_train_end(self, args, state, control, **kwargs):
            worker.cancel.deferred = False
            last_loss = worker.metrics.loss_curve[-1][1] if worker.metrics.loss_curve else None
            worker.write_progress(state.global_step, state.max_steps, float(state.epoch or 0.0), last_loss)

        def on_step_end(self, args, state, control, **kwargs):
            if worker.cancel.requested.is_set():
                control.should_training_stop = True
                control.should_evaluate = False
                control.should_save = False
            elif time.monotonic() - worker._last_progress >= PROGRESS_EVERY_S or state.global_step == 1:
                last_loss = worker.metrics.loss_curve[-1][1] if worker.metrics.loss_curve else None
                worker.write_progress(state.global_step, state.max_steps, float(state.epoch or 0.0), last_loss)

        def on_epoch_end(self, args, state, control, **kwargs):
            if worker.cancel.requested.is_set():
                control.should_evaluate = False
                control.should_save = False

        def on_prediction_step(self, args, state, control, **kwargs):
            if worker.cancel.requested.is_set():
                raise JobCanceled("cancel requested during evaluation")

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            step, epoch = state.global_step, float(state.epoch or 0.0)
            if "num_tokens" in logs:
                self.num_tokens = int(logs["num_tokens"])
            if "loss" in logs:
                loss = float(logs["loss"])
                worker.metrics.loss_curve.append((step, loss))
                worker.write_progress(step, state.max_steps, epoch, loss)
                lr = logs.get("learning_rate")
                worker.log(
                    f"step {step}/{state.max_steps} epoch {epoch:.2f}: loss {loss:.4f}"
                    + (f", learning rate {lr:.3g}" if lr is not None else "")
                )
                worker.mlflow_metrics({"loss": loss}, step=step)
            if "eval_loss" in logs and self.phase == "train":  # evaluations the trainer runs between steps
                self.eval_seconds += float(logs.get("eval_runtime", 0.0))
                metrics = eval_metrics(logs)
                self.last_eval = (step, metrics)
                worker.metrics.eval_curve.append((step, metrics.eval_loss))
                worker.log(f"step {step} evaluation: {_describe_eval(metrics)}")
                worker.mlflow_metrics({"eval_loss": metrics.eval_loss}, step=step)
                worker.write_metrics()

    return WorkerCallback()


# -- outputs ----------------------------------------------------------------------------------------------


def write_loss_curve(metrics: JobMetricsFile, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if metrics.loss_curve:
        ax.plot(*zip(*metrics.loss_curve, strict=True), label="train loss", color="tab:blue")
    if metrics.eval_curve:
        ax.plot(*zip(*metrics.eval_curve, strict=True), "o-", label="eval loss", color="tab:orange")
    if metrics.base is not None:
        ax.axhline(metrics.base.eval_loss, linestyle="--", color="gray", label="base model eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{title}: loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    staging = path.with_name(f".{path.name}.partial.png")
    fig.savefig(staging)
    plt.close(fig)
    os.replace(staging, path)


def render_report(job: TrainingJob, metrics: JobMetricsFile, steps: int) -> str:
    def cell(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    base, final = metrics.base, metrics.final
    params = job.parameters
    method = f"LoRA r={params.lora_r} alpha={params.lora_alpha}" if params.apply_lora else "full fine-tuning"
    lines = [
        f"# Fine-tuning report: {job.name}",
        "",
        f"- base model: `{job.base_model}`",
        f"- method: {method}, learning rate {params.learning_rate:g}, {params.lr_scheduler_type} schedule, "
        f"max_length {params.max_seq_length}",
        f"- steps: {steps}, train loss {cell(metrics.train_loss)}, {metrics.train_tokens} tokens in "
        f"{metrics.train_seconds:.1f} s ({metrics.tokens_per_second:.1f} tokens/s) on {metrics.device}",
        "",
        "| test split | base model | fine-tuned |",
        "|---|---|---|",
        f"| eval loss | {cell(base and base.eval_loss)} | {cell(final and final.eval_loss)} |",
        f"| perplexity | {cell(base and base.perplexity, 2)} | {cell(final and final.perplexity, 2)} |",
        f"| mean token accuracy | {cell(base and base.mean_token_accuracy)} | "
        f"{cell(final and final.mean_token_accuracy)} |",
        "",
        "![loss curve](loss_curve.png)",
        "",
    ]
    if metrics.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in metrics.notes), ""]
    return "\n".join(lines)


def _describe_eval(metrics: EvalMetrics) -> str:
    accuracy = "" if metrics.mean_token_accuracy is None else f", token accuracy {metrics.mean_token_accuracy:.4f}"
    return f"eval loss {metrics.eval_loss:.4f}, perplexity {metrics.perplexity:.2f}{accuracy}"


def _describe_device(torch, device: str) -> str:
    if device == "cuda":
        count = torch.cuda.device_count()
        return f"cuda: {torch.cuda.get_device_name(0)}" + (f" x{count}" if count > 1 else "")
    return f"cpu ({torch.get_num_threads()} threads)"


def _parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _prepare_environment() -> None:
    """Before torch is imported. OpenMP threads that sleep instead of spinning while they wait: on a machine
    shared with other work, spinning threads fight for the cores and steps get 5-15x slower (measured here:
    tiny model on 2 busy cores, 358 vs 1,299 tokens/s)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    for name in ("httpx", "urllib3", "alembic", "mlflow", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from transformers/peft


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {WORKER_MODULE} JOB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _prepare_environment()
    files = JobFiles(Path(argv[0]).resolve())
    if not files.exists():
        print(f"no job.json in {files.root}", file=sys.stderr)
        return 2
    return TrainingWorker(files).run()


def _exit(code: int) -> None:
    """Exit now: the outcome is on disk, and the interpreter's teardown of torch & co takes seconds."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = 1
    with contextlib.suppress(JobCanceled):  # a signal after the worker's own handling: the outcome is recorded
        exit_code = main()
    _exit(exit_code)
