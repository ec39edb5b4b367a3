"""Submitting a prepared run's fine-tuning job to the engine (job name = run id: idempotent)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from shared.context import AppContext
from shared.domain.errors import AutopilotError
from shared.domain.naming import line_model_name
from shared.domain.runs import (
    RunError,
    RunRecord,
    RunState,
    RunWarning,
    add_attempt,
    advance_from,
)
from shared.domain.tags import CHAMPION, RUN_TAG
from shared.engine.base import JobSpec, ModelRef, TrainingData
from shared.settings import Settings

logger = logging.getLogger(__name__)


class IntakeStatus(StrEnum):
    IGNORED = "ignored"  # not a dataset (our own outputs, other file types)
    DUPLICATE = "duplicate"  # this content already is a run past intake
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    FAILED = "failed"  # valid, but no engine could take the job


@dataclass(frozen=True)
class IntakeOutcome:
    status: IntakeStatus
    run_id: str | None
    detail: str


def job_spec_for(settings: Settings, record: RunRecord, attempt: int = 0, champion: ModelRef | None = None) -> JobSpec:
    """The job a run submits (its `attempt`-th resubmission, from 1): its parameters, the prepared splits, and the
    line's champion for an engine that evaluates it on the same split."""
    run_id = record.run_id
    container, prefix = record.dataset.container, f"{settings.prepared_prefix}{run_id}/"
    return JobSpec(
        run_id=run_id,
        base_model=record.base_model,
        parameters=record.parameters,
        data=TrainingData(container=container, train_blob=f"{prefix}train.jsonl", test_blob=f"{prefix}test.jsonl"),
        tags={RUN_TAG: run_id, "dataset_sha256": record.dataset.sha256},
        attempt=attempt,
        champion=champion,
    )


def champion_to_compare(ctx: AppContext, record: RunRecord) -> ModelRef | None:
    """The line's champion, for engines whose job evaluates it on the run's test split; None for the others."""
    if not ctx.profile.evaluates_champion:
        return None
    model_name = line_model_name(record.line, record.base_model, ctx.settings.finetuned_model_suffix)
    return ctx.engine.get_model(model_name, alias=CHAMPION)


def submit(ctx: AppContext, record: RunRecord) -> IntakeOutcome:
    run_id = record.run_id
    try:
        spec = job_spec_for(ctx.settings, record, champion=champion_to_compare(ctx, record))
        job = ctx.engine.submit_job(spec)
    except AutopilotError as exc:
        if exc.transient:
            raise
        error = RunError(code=exc.code, message=exc.message)
        ctx.ledger.transition(
            run_id,
            advance_from(
                RunState.VALIDATING, RunState.FAILED, f"submission failed: {error.code}", ctx.now(), error=error
            ),
        )
        logger.error("run %s cannot be submitted: %s", run_id, error.message, extra={"run_id": run_id})
        return IntakeOutcome(IntakeStatus.FAILED, run_id, error.message)
    reason = f"job {job.name} submitted to the {ctx.engine.name} engine"
    warnings = [RunWarning(code=w.code, message=w.message) for w in job.warnings]
    for warning in warnings:
        logger.warning("run %s: %s", run_id, warning.message, extra={"run_id": run_id})
    changes: dict[str, object] = {"job_name": job.name}
    if warnings:
        changes["warnings"] = warnings
    ctx.ledger.transition(run_id, advance_from(RunState.VALIDATING, RunState.SUBMITTED, reason, ctx.now(), **changes))
    logger.info("run %s submitted as job %s", run_id, job.name, extra={"run_id": run_id})
    return IntakeOutcome(IntakeStatus.SUBMITTED, run_id, f"job {job.name}")


def note_attempt(ctx: AppContext, run_id: str, stage: str, exc: AutopilotError) -> None:
    """Best effort: the error that is about to be raised matters more than this note."""
    try:
        ctx.ledger.update(
            run_id, lambda r: add_attempt(r, stage=stage, code=exc.code, message=exc.message, now=ctx.now())
        )
    except AutopilotError:
        logger.warning("run %s: could not record the failed attempt", run_id, exc_info=True, extra={"run_id": run_id})
