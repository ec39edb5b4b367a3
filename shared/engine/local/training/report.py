"""What a job reports about its model: evaluation summaries, the loss curve (loss_curve.png) and report.md."""

from __future__ import annotations

import math
import os
from pathlib import Path

from shared.engine.local.jobfiles import EvalMetrics, JobMetricsFile, TrainingJob
from shared.engine.local.training.errors import JobFailure


def eval_metrics(values: dict[str, float]) -> EvalMetrics:
    """The trainer's evaluation output as EvalMetrics (perplexity from the loss); a non-finite loss fails the job."""
    loss = float(values["eval_loss"])
    if not math.isfinite(loss):
        raise JobFailure("training_failed", f"evaluation loss is not finite ({loss})")
    accuracy = values.get("eval_mean_token_accuracy")
    return EvalMetrics(
        eval_loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        mean_token_accuracy=float(accuracy) if accuracy is not None else None,
    )


def describe_eval(metrics: EvalMetrics) -> str:
    accuracy = "" if metrics.mean_token_accuracy is None else f", token accuracy {metrics.mean_token_accuracy:.4f}"
    return f"eval loss {metrics.eval_loss:.4f}, perplexity {metrics.perplexity:.2f}{accuracy}"


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
        f"| eval loss | {cell(base.eval_loss if base else None)} | {cell(final.eval_loss if final else None)} |",
        f"| perplexity | {cell(base.perplexity if base else None, 2)} | "
        f"{cell(final.perplexity if final else None, 2)} |",
        f"| mean token accuracy | {cell(base.mean_token_accuracy if base else None)} | "
        f"{cell(final.mean_token_accuracy if final else None)} |",
        "",
        "![loss curve](loss_curve.png)",
        "",
    ]
    if metrics.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in metrics.notes), ""]
    return "\n".join(lines)
