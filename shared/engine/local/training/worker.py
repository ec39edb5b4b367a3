"""TrainingWorker: one job, from `queued` to `completed`, `failed` or `canceled`, in the job folder it owns.

The steps are in the package's other modules (data, model, configs, callback, report, mlflow_run); this module
holds the order, the reporting (status.json, events, job.log, metrics.json, progress.json; rank 0 only) and the
SIGTERM handling (Cancellation).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import traceback
from typing import Any

from shared.domain.clock import utc_now
from shared.domain.finetune import FineTuneParameters
from shared.domain.jobs import JobStatus
from shared.engine.local.jobfiles import (
    EvalMetrics,
    JobError,
    JobFiles,
    JobMetricsFile,
    JobState,
    Progress,
    TrainingJob,
)
from shared.engine.local.training.callback import make_callback
from shared.engine.local.training.configs import deepspeed_config
from shared.engine.local.training.data import MIN_TRAINING_ROWS, read_conversations
from shared.engine.local.training.errors import JobCanceled, JobFailure
from shared.engine.local.training.event_sender import EventSender
from shared.engine.local.training.mlflow_run import MlflowRun
from shared.engine.local.training.model import (
    build_trainer,
    describe_device,
    load_model,
    load_tokenizer,
    resolve_base_model_folder,
    save_model,
)
from shared.engine.local.training.report import describe_eval, eval_metrics, render_report, write_loss_curve

logger = logging.getLogger(__name__)

CANCELED_EXIT_CODE = 143  # 128 + SIGTERM


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


class TrainingWorker:
    def __init__(self, files: JobFiles) -> None:
        self.files = files
        self.main = int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun only rank 0 reports
        self.cancel = Cancellation()
        self.metrics = JobMetricsFile()
        self.state: JobState | None = None
        self.events: EventSender | None = None
        self.mlflow = MlflowRun()
        self.last_progress = 0.0  # monotonic time of the last progress.json (the callback writes at most 2/s)
        self._callback: Any = None  # the TrainerCallback (make_callback), once the trainer exists

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
        self.last_progress = time.monotonic()
        if self.main:
            self.files.write_progress(
                Progress(step=step, max_steps=max_steps, epoch=epoch, loss=loss, updated_at=utc_now())
            )

    def mlflow_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics(values, step=step)

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
            self.mlflow.end(JobStatus.COMPLETED)  # before the status: whoever reacts to it finds a finished run
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
            self.mlflow.end(outcome)
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
        bf16_supported = device == "cuda" and params.precision == "16" and torch.cuda.is_bf16_supported()
        self.metrics.device = describe_device(torch, device)
        self.log(f"device: {self.metrics.device}")

        folder = resolve_base_model_folder(job)
        tokenizer = load_tokenizer(folder)
        dtype = self._precision(params, device, torch, bf16_supported)
        deepspeed = self._deepspeed(params, device)
        self._note_parameters(params)

        from transformers import set_seed

        set_seed(params.seed)
        model = load_model(folder, dtype)
        self.log(f"base model: {job.base_model} ({folder}), {model.num_parameters():,} parameters, dtype {dtype}")
        self.cancel.check()

        self._callback = make_callback(self)
        trainer = build_trainer(
            params,
            model,
            tokenizer,
            train_rows,
            test_rows,
            device=device,
            bf16_supported=bf16_supported,
            deepspeed=deepspeed,
            output_dir=self.files.root / ".trainer",
            callback=self._callback,
            log=self.log,
            note=self.note,
        )
        evaluate = trainer.eval_dataset is not None
        if self.main:
            run_id = self.mlflow.start(job, folder, self.metrics, train_rows=len(train_rows), test_rows=len(test_rows))
            self.log(f"MLflow run {run_id} in experiment {job.experiment_name}")

        if evaluate:
            self.log("evaluating the base model on the test split")
            self.metrics.base = self._evaluate(trainer)
            self.log(f"base model: {describe_eval(self.metrics.base)}")
            self.mlflow.log_eval("base", self.metrics.base)
            if job.champion and job.champion_model_dir:
                self._evaluate_champion(job.champion, job.champion_model_dir, dtype, trainer, tokenizer)
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
            self.log(f"fine-tuned model: {describe_eval(self.metrics.final)}")
            self.mlflow.log_eval("final", self.metrics.final)
            if not self.metrics.eval_curve or self.metrics.eval_curve[-1][0] != trainer.state.global_step:
                self.metrics.eval_curve.append((trainer.state.global_step, self.metrics.final.eval_loss))
        self.write_metrics()
        self.cancel.check()

        merged = save_model(
            trainer,
            tokenizer,
            folder=folder,
            dtype=dtype,
            params=params,
            files=self.files,
            main=self.main,
            log=self.log,
        )
        if self.main:
            write_loss_curve(self.metrics, self.files.loss_curve_png, job.name)
            self.files.report_md.write_text(
                render_report(job, self.metrics, trainer.state.global_step), encoding="utf-8"
            )
            # MLflow names the logged model after name_or_path: the fine-tuned model, not a staging or base folder
            merged.name_or_path = merged.config._name_or_path = tokenizer.name_or_path = f"ft-autopilot/{job.name}"
            seconds = self.mlflow.finish(merged, tokenizer, self.metrics, self.files)
            if seconds is not None:
                self.log(f"logged the model to MLflow as {self.metrics.mlflow_model_uri} in {seconds:.1f} s")
        self.write_metrics()

    # steps of train() that decide what applies here, with notes

    def _precision(self, params: FineTuneParameters, device: str, torch, bf16_supported: bool):
        if params.precision == "16" and device == "cuda":
            if bf16_supported:
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

    def _evaluate(self, trainer) -> EvalMetrics:
        self._callback.phase = "eval"
        try:
            return eval_metrics(trainer.evaluate())
        finally:
            self._callback.phase = "train"

    def _evaluate_champion(self, champion: str, model_dir: str, dtype, trainer, tokenizer) -> None:
        """The line's champion on the same prepared test split, with the same collator: a loss like for like with
        the challenger's. A champion that cannot be loaded is noted, not fatal (the gate then compares no loss)."""
        from trl import SFTTrainer

        self.log(f"evaluating the champion {champion} on the test split")
        try:
            model = load_model(model_dir, dtype)
        except JobFailure as exc:
            self.note(f"the champion {champion} could not be loaded ({exc.message}): its loss is not compared")
            return
        champion_trainer = SFTTrainer(
            model=model,
            args=trainer.args,
            train_dataset=trainer.eval_dataset,  # required by the constructor; only evaluated here
            eval_dataset=trainer.eval_dataset,
            processing_class=tokenizer,
            data_collator=trainer.data_collator,
        )
        from transformers import PrinterCallback

        champion_trainer.remove_callback(PrinterCallback)
        self.metrics.champion = eval_metrics(champion_trainer.evaluate())
        self.metrics.champion_model = champion
        self.log(f"champion {champion}: {describe_eval(self.metrics.champion)}")
        self.mlflow.log_eval("champion", self.metrics.champion)
        del champion_trainer, model

    def _final_eval(self, trainer) -> EvalMetrics:
        last = self._callback.last_eval
        if last is not None and last[0] == trainer.state.global_step:
            return last[1]  # the trainer evaluated right after the last step already
        self.log("evaluating the fine-tuned model on the test split")
        return self._evaluate(trainer)
