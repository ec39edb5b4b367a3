"""What every lifecycle step shares: one engine operation at a time, with failures counted per operation
(`attempt`), the fine-tuned model's name, and the run's dataset lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from shared.context import AppContext
from shared.domain.errors import AutopilotError
from shared.domain.gate import GatePolicy
from shared.domain.naming import endpoint_name_for, line_model_name
from shared.domain.runs import (
    RunError,
    RunRecord,
    RunState,
    add_attempt,
    advance_from,
    failed_tries,
    resolve_attempts,
)
from shared.domain.tags import RUN_TAG
from shared.engine.base import ModelRef

logger = logging.getLogger(__name__)


T = TypeVar("T")


def deploying_to(ctx: AppContext, record: RunRecord) -> str | None:
    """The endpoint a run is deploying to while it is registered or deploying; None in any other state."""
    if record.state not in (RunState.REGISTERED, RunState.DEPLOYING):
        return None
    if record.endpoint is not None:
        return record.endpoint.name
    return endpoint_name_for(record.model.name, ctx.profile.endpoint_scope) if record.model else None


def champion_is_newer(ctx: AppContext, record: RunRecord, champion: ModelRef) -> bool:
    """Whether the champion comes from a run newer than this one (by upload, see RunRecord.order). A champion whose
    run cannot be read counts as newer (the stricter comparison); one whose run this ledger does not know, as
    older."""
    champion_run = champion.tags.get(RUN_TAG)
    if not champion_run or champion_run == record.run_id:
        return False
    try:
        found = ctx.ledger.find(champion_run)
    except AutopilotError:
        return True
    return found is not None and found.order > record.order


def model_name_for(ctx: AppContext, record: RunRecord) -> str:
    """The run's line's model name: its champion and its endpoint are the line's."""
    return line_model_name(record.line, record.base_model, ctx.settings.finetuned_model_suffix)


def gate_policy_for(ctx: AppContext, record: RunRecord) -> GatePolicy:
    """The line's gate (recorded on the run when it was taken in), else the settings'."""
    config = record.line_config
    return GatePolicy(
        config.gate_min_improvement if config else ctx.settings.gate_min_improvement,
        config.gate_champion_tolerance if config else ctx.settings.gate_champion_tolerance,
        require_base_eval=ctx.profile.gate_requires_base_eval,
    )


def attempt(ctx: AppContext, record: RunRecord, stage: str, operation: str, call: Callable[[], T]) -> T:
    """Run one engine operation of a step. A transient failure is noted on the run and raised (the platform
    redelivers) until this operation has failed MAX_STEP_ATTEMPTS times in a row, i.e. since it last succeeded;
    then, or at once on a permanent error, the run fails. Each operation counts on its own: a deployment that takes
    many polls to provision is not failing while the polls answer, and a throttled poll now and then never adds up.

    `record` is the run as this step read it. A success writes only when it finds failures of the operation there,
    to mark them resolved: the happy path writes nothing."""
    try:
        result = call()
    except AutopilotError as exc:
        if _note_failure(ctx, record.run_id, stage, operation, exc):
            raise
        raise StepFailed(f"run {record.run_id}: {stage} failed: {exc.message}", code=exc.code) from exc
    if failed_tries(record, stage=stage, operation=operation):
        ctx.ledger.update(record.run_id, lambda r: resolve_attempts(r, stage=stage, operation=operation, now=ctx.now()))
    return result


def _note_failure(ctx: AppContext, run_id: str, stage: str, operation: str, exc: AutopilotError) -> bool:
    """Note the failure on the run; True while it may be retried, else the run is recorded failed (False)."""
    updated = ctx.ledger.update(
        run_id,
        lambda r: add_attempt(r, stage=stage, operation=operation, code=exc.code, message=exc.message, now=ctx.now()),
    )
    tries, limit = failed_tries(updated, stage=stage, operation=operation), ctx.settings.max_step_attempts
    if exc.transient and tries < limit:
        logger.warning(
            "run %s: %s %s failed (%d/%d in a row), will be retried: %s",
            run_id,
            stage,
            operation,
            tries,
            limit,
            exc.message,
            extra={"run_id": run_id},
        )
        return True
    logger.error(
        "run %s: %s %s failed for good (%s): %s",
        run_id,
        stage,
        operation,
        f"{tries} times in a row" if exc.transient else "a permanent error",
        exc.message,
        extra={"run_id": run_id},
    )
    ctx.ledger.transition(
        run_id,
        advance_from(
            updated.state,
            RunState.FAILED,
            f"{stage} failed: {operation}: {exc.code}",
            ctx.now(),
            error=RunError(code=exc.code, message=exc.message),
        ),
    )
    return False


class StepFailed(AutopilotError):
    """A lifecycle step failed for good; the run is recorded `failed`. Not retried."""

    code = "step_failed"
