"""A job status applied to its run: the one place that maps the engine's job states onto the run's."""

from __future__ import annotations

import logging

from shared.context import AppContext
from shared.domain.jobs import JobStatus
from shared.domain.runs import (
    RunError,
    RunRecord,
    RunState,
    advance_from,
)

logger = logging.getLogger(__name__)

# How a job status moves a run, from the states it may come from.
_JOB_TRANSITIONS: dict[JobStatus, tuple[frozenset[RunState], RunState]] = {
    JobStatus.RUNNING: (frozenset({RunState.SUBMITTED}), RunState.RUNNING),
    JobStatus.COMPLETED: (frozenset({RunState.SUBMITTED, RunState.RUNNING}), RunState.TRAINED),
    JobStatus.FAILED: (frozenset({RunState.SUBMITTED, RunState.RUNNING}), RunState.FAILED),
    JobStatus.CANCELED: (frozenset({RunState.SUBMITTED, RunState.RUNNING}), RunState.CANCELED),
}


def record_job_status(ctx: AppContext, run_id: str, status: JobStatus, *, error: str | None = None) -> RunRecord:
    """Apply a job status to the run. A status that does not fit the run's state (stale, duplicated or out of
    order) changes nothing."""
    if status not in _JOB_TRANSITIONS:
        return ctx.ledger.get(run_id)
    sources, target = _JOB_TRANSITIONS[status]
    reason = f"job {status}" + (f": {error}" if error else "")
    changes = (
        {"error": RunError(code=f"job_{status}", message=error or f"the job was {status}")}
        if status in (JobStatus.FAILED, JobStatus.CANCELED)
        else {}
    )

    def change(record: RunRecord) -> RunRecord | None:
        if record.state not in sources:
            return None
        return advance_from(record.state, target, reason, ctx.now(), **changes)(record)

    before = ctx.ledger.get(run_id)
    after = ctx.ledger.transition(run_id, change)
    if after.state == before.state:
        logger.info("run %s: job %s ignored in state %s", run_id, status, before.state, extra={"run_id": run_id})
    return after
