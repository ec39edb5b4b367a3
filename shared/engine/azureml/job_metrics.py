"""Training metrics of a finished pipeline job, read from the workspace's MLflow tracking server over REST.

The pipeline's evaluation output is commented out in current component versions, so metrics come from the
finetune step's own MLflow run (the Hugging Face Trainer logs `loss` every logging_steps, `eval_loss` per
evaluation and `train_loss` at the end). The base model is not evaluated by the pipeline: base_eval_loss is None.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from shared.adapters.http import get_json
from shared.engine.base import JobMetrics

# The token audience Azure ML's MLflow endpoint accepts (the one azure-ai-ml's workspace calls use).
TRACKING_SCOPE = "https://management.azure.com/.default"
FINETUNE_STEP_MARKER = "finetune"

HttpGet = Callable[[str, dict[str, str]], dict[str, Any]]


def rest_base(tracking_uri: str) -> str:
    """`azureml://<region>.api.azureml.ms/mlflow/v1.0/...` as the https base of MLflow's REST API."""
    return "https://" + tracking_uri.removeprefix("azureml://").rstrip("/")


def http_get_json(url: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = get_json(url, headers=headers, timeout_s=60)
    if not isinstance(answer, dict):
        raise ValueError(f"{url}: the answer is not a JSON object")
    return answer


def finetune_step(jobs: Iterable[Any]) -> Any | None:
    """The finetune step among a pipeline's descendants (not the pipeline component node that contains it)."""
    for job in jobs:
        label = f"{getattr(job, 'display_name', '') or ''} {getattr(job, 'name', '')}".lower()
        if FINETUNE_STEP_MARKER in label and "pipeline" not in label and getattr(job, "type", "") != "pipeline":
            return job
    return None


def read_job_metrics(base_url: str, run_id: str, token: str, get: HttpGet = http_get_json) -> JobMetrics:
    headers = {"Authorization": f"Bearer {token}"}
    query = urllib.parse.urlencode({"run_id": run_id})
    run = get(f"{base_url}/api/2.0/mlflow/runs/get?{query}", headers).get("run", {})
    latest = {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", [])}
    history_query = urllib.parse.urlencode({"run_id": run_id, "metric_key": "loss"})
    history = get(f"{base_url}/api/2.0/mlflow/metrics/get-history?{history_query}", headers).get("metrics", [])
    curve = tuple(sorted((int(m.get("step", 0)), float(m["value"])) for m in history))
    eval_loss = latest.get("eval_loss")
    train_loss = latest.get("train_loss", latest.get("loss"))
    return JobMetrics(
        train_loss=train_loss,
        eval_loss=eval_loss,
        base_eval_loss=None,
        perplexity=math.exp(eval_loss) if eval_loss is not None and eval_loss < 50 else None,
        mean_token_accuracy=latest.get("eval_mean_token_accuracy"),
        loss_curve=curve,
    )
