"""The job's MLflow run (rank 0 only): parameters at the start, metrics as they come, then the loss curve, the
report and the merged model. The tracking store is shared.engine.local.mlflow_store; mlflow is imported inside
the methods."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.domain.jobs import JobStatus
from shared.domain.tags import RUN_TAG
from shared.engine.local.jobfiles import EvalMetrics, JobFiles, JobMetricsFile, TrainingJob

logger = logging.getLogger(__name__)


class MlflowRun:
    def __init__(self) -> None:
        self._run: Any = None

    def start(self, job: TrainingJob, folder: str, metrics: JobMetricsFile, *, train_rows: int, test_rows: int) -> str:
        """Start the run in the job's experiment, with the job's parameters; its id goes to `metrics`. Returns it."""
        import mlflow

        from shared.engine.local.mlflow_store import configure_mlflow

        configure_mlflow(Path(job.state_dir), job.experiment_name)
        run = mlflow.start_run(run_name=job.name, tags={**job.tags, RUN_TAG: job.name, "base_model": job.base_model})
        self._run = run
        metrics.mlflow_run_id = run.info.run_id
        mlflow.log_params(
            {
                **job.parameters.model_dump(mode="json"),
                "base_model": job.base_model,
                "base_model_folder": folder,
                "device": metrics.device,
                "train_rows": train_rows,
                "test_rows": test_rows,
            }
        )
        return run.info.run_id

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        """Per-step metrics: a tracking hiccup is logged, never fatal."""
        if self._run is None:
            return
        try:
            import mlflow

            mlflow.log_metrics(values, step=step)
        except Exception as exc:  # a tracking hiccup must not end a training run
            logger.warning("MLflow metrics not logged: %s", exc)

    def log_eval(self, prefix: str, metrics: EvalMetrics) -> None:
        values = {f"{prefix}_eval_loss": metrics.eval_loss, f"{prefix}_perplexity": metrics.perplexity}
        if metrics.mean_token_accuracy is not None:
            values[f"{prefix}_mean_token_accuracy"] = metrics.mean_token_accuracy
        self.log_metrics(values)

    def finish(self, merged, tokenizer, metrics: JobMetricsFile, files: JobFiles) -> float | None:
        """The training summary, the loss curve, the report and the merged model (its URI goes to `metrics`).
        Returns the seconds logging the model took (None without a run)."""
        if self._run is None:
            return None
        import mlflow
        import torch
        import transformers

        summary = {
            "train_loss": metrics.train_loss,
            "train_tokens": float(metrics.train_tokens),
            "train_seconds": metrics.train_seconds,
            "tokens_per_second": metrics.tokens_per_second,
        }
        mlflow.log_metrics({k: v for k, v in summary.items() if v is not None})
        mlflow.log_artifact(str(files.loss_curve_png))
        mlflow.log_artifact(str(files.report_md))
        started = time.monotonic()
        with _hub_offline():
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
        metrics.mlflow_model_uri = info.model_uri
        return time.monotonic() - started

    def end(self, outcome: JobStatus) -> None:
        if self._run is None:
            return
        try:
            import mlflow

            status = {JobStatus.COMPLETED: "FINISHED", JobStatus.CANCELED: "KILLED"}.get(outcome, "FAILED")
            mlflow.end_run(status=status)
        except Exception as exc:  # the job's outcome is recorded already
            logger.warning("MLflow run not closed: %s", exc)
        self._run = None


@contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hugging Face Hub switched off for the block. MLflow looks the fine-tuned model up on the Hub for its model
    card and license (it has no page there): unreachable, the lookups retried for 48 s in every job; offline, they
    fail at once and MLflow logs the model without them. huggingface_hub reads this flag on every request."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was
