"""The worker's TrainerCallback: progress.json and job.log lines per step, evaluations between steps, and
cancellation (a SIGTERM stops the trainer after the current step)."""

from __future__ import annotations

import time
from typing import Any

from shared.engine.local.jobfiles import EvalMetrics
from shared.engine.local.training.errors import JobCanceled
from shared.engine.local.training.report import describe_eval, eval_metrics

PROGRESS_EVERY_S = 0.5


def make_callback(worker: Any):
    """A TrainerCallback (transformers imported lazily) that reports progress and honours cancellation.

    `worker` is the TrainingWorker: its `cancel`, `metrics`, `log`, `write_progress`, `write_metrics` and
    `mlflow_metrics`.
    """
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
            _write_progress(worker, state)

        def on_step_end(self, args, state, control, **kwargs):
            if worker.cancel.requested.is_set():
                control.should_training_stop = True
                _skip_evaluation_and_save(control)
            elif time.monotonic() - worker.last_progress >= PROGRESS_EVERY_S or state.global_step == 1:
                _write_progress(worker, state)

        def on_epoch_end(self, args, state, control, **kwargs):
            if worker.cancel.requested.is_set():
                _skip_evaluation_and_save(control)

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
                worker.log(f"step {step} evaluation: {describe_eval(metrics)}")
                worker.mlflow_metrics({"eval_loss": metrics.eval_loss}, step=step)
                worker.write_metrics()

    return WorkerCallback()


def _write_progress(worker: Any, state: Any) -> None:
    """progress.json at the trainer's current step, with the last loss it logged."""
    last_loss = worker.metrics.loss_curve[-1][1] if worker.metrics.loss_curve else None
    worker.write_progress(state.global_step, state.max_steps, float(state.epoch or 0.0), last_loss)


def _skip_evaluation_and_save(control: Any) -> None:
    """A cancel requested: the trainer neither evaluates nor saves at the end of this step or epoch."""
    control.should_evaluate = False
    control.should_save = False
