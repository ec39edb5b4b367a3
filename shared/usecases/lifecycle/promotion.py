"""After training: review the job's metrics, gate on quality, and register the model."""

from __future__ import annotations

import logging

from shared.context import AppContext
from shared.domain.charts import loss_curve_svg
from shared.domain.gate import quality_gate
from shared.domain.runs import (
    ModelVersion,
    RunMetrics,
    RunRecord,
    RunState,
    advance_from,
)
from shared.domain.tags import CHAMPION, RUN_TAG
from shared.usecases.lifecycle.steps import attempt, champion_is_newer, gate_policy_for, model_name_for

logger = logging.getLogger(__name__)


def review_gate_register(ctx: AppContext, record: RunRecord) -> RunRecord:
    engine, run_id, job_name = ctx.engine, record.run_id, record.job_name
    assert job_name is not None  # set on the transition to submitted
    job_metrics = attempt(ctx, record, "review", "job_metrics", lambda: engine.job_metrics(job_name))
    metrics = RunMetrics(
        train_loss=job_metrics.train_loss,
        eval_loss=job_metrics.eval_loss,
        base_eval_loss=job_metrics.base_eval_loss,
        champion_eval_loss=job_metrics.champion_eval_loss,
        champion=job_metrics.champion,
        perplexity=job_metrics.perplexity,
        mean_token_accuracy=job_metrics.mean_token_accuracy,
    )
    artifacts = _write_training_report(ctx, record, metrics, job_metrics.loss_curve)
    model_name = model_name_for(ctx, record)
    champion = attempt(ctx, record, "review", "get_model", lambda: engine.get_model(model_name, alias=CHAMPION))
    policy = gate_policy_for(ctx, record)
    gate = quality_gate(
        metrics,
        policy,
        champion=f"{champion.name}:{champion.version}" if champion else None,
        champion_is_newer=champion is not None and champion_is_newer(ctx, record, champion),
    )
    logger.info(
        "run %s gate %s: %s",
        run_id,
        "passed" if gate.passed else "failed",
        "; ".join(gate.reasons),
        extra={"run_id": run_id},
    )
    if not gate.passed:
        return ctx.ledger.transition(
            run_id,
            advance_from(
                RunState.TRAINED,
                RunState.GATED_OUT,
                "quality gate: " + "; ".join(gate.reasons),
                ctx.now(),
                metrics=metrics,
                gate=gate,
                artifacts=artifacts,
            ),
        )
    tags = {
        RUN_TAG: run_id,
        "dataset_sha256": record.dataset.sha256,
        "base_model": record.base_model,
        "parameters": record.parameters.canonical_json().decode(),
        "eval_loss": f"{metrics.eval_loss:.6f}",
    }
    model = attempt(
        ctx, record, "register", "register_model", lambda: engine.register_model(job_name, model_name, tags)
    )
    return ctx.ledger.transition(
        run_id,
        advance_from(
            RunState.TRAINED,
            RunState.REGISTERED,
            f"registered {model.name} version {model.version}",
            ctx.now(),
            metrics=metrics,
            gate=gate,
            artifacts=artifacts,
            model=ModelVersion(name=model.name, version=model.version),
        ),
    )


def _write_training_report(
    ctx: AppContext, record: RunRecord, metrics: RunMetrics, loss_curve: tuple[tuple[int, float], ...]
):
    container = record.dataset.container
    prefix = f"{ctx.settings.prepared_prefix}{record.run_id}/"
    svg = loss_curve_svg(
        loss_curve,
        base_eval_loss=metrics.base_eval_loss,
        eval_loss=metrics.eval_loss,
        title=f"Run {record.run_id}: training loss",
    )
    ctx.store.write(container, f"{prefix}loss_curve.svg", svg.encode(), content_type="image/svg+xml")
    ctx.store.write(
        container,
        f"{prefix}training.md",
        _training_markdown(record, metrics).encode(),
        content_type="text/markdown; charset=utf-8",
    )
    return record.artifacts.model_copy(
        update={
            "loss_curve": f"{container}/{prefix}loss_curve.svg",
            "training_report": f"{container}/{prefix}training.md",
        }
    )


def _training_markdown(record: RunRecord, metrics: RunMetrics) -> str:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    return "\n".join(
        [
            f"# Training review: run {record.run_id}",
            "",
            f"- Base model: `{record.base_model}`; dataset `{record.dataset.container}/{record.dataset.blob}` "
            f"(sha256 `{record.dataset.sha256[:12]}…`)",
            f"- Job: `{record.job_name}` on the {record.engine} engine",
            "",
            "| metric | base model | fine-tuned |",
            "|---|---|---|",
            f"| eval loss | {show(metrics.base_eval_loss)} | {show(metrics.eval_loss)} |",
            *(
                [f"| champion {metrics.champion}, same split | - | {show(metrics.champion_eval_loss)} |"]
                if metrics.champion
                else []
            ),
            f"| perplexity | - | {show(metrics.perplexity)} |",
            f"| mean token accuracy | - | {show(metrics.mean_token_accuracy)} |",
            f"| final train loss | - | {show(metrics.train_loss)} |",
            "",
            "![loss curve](loss_curve.svg)",
            "",
        ]
    )
