"""A failed job whose cause is transient (a lost worker, a preempted node, a system error) is submitted again, on the
same run, up to the line's `max_job_retries`; any other failure fails the run with its cause."""

from __future__ import annotations

import logging

from shared.context import AppContext
from shared.domain.jobs import JobStatus
from shared.domain.lines import LineConfig
from shared.domain.runs import JobRetry, RunRecord, RunState, advance
from shared.engine.base import JobInfo
from shared.usecases.lifecycle.status import record_job_status
from shared.usecases.submission import champion_to_compare, job_spec_for

logger = logging.getLogger(__name__)

DEFAULT_MAX_JOB_RETRIES = LineConfig().max_job_retries  # for runs recorded before lines


def retry_or_fail(ctx: AppContext, run_id: str, job: JobInfo) -> RunRecord:
    """Submit the run's next job when `job` failed for a transient cause and retries are left; else record the
    failure. A stale job (the run has moved on to another) changes nothing; a duplicate submits nothing twice
    (the next job's name is fixed by the retry count, and submissions are idempotent by name)."""
    record = ctx.ledger.get(run_id)
    if record.state not in (RunState.SUBMITTED, RunState.RUNNING) or record.job_name != job.name:
        return record
    limit = record.line_config.max_job_retries if record.line_config else DEFAULT_MAX_JOB_RETRIES
    cause = job.error or "the job failed"
    if not job.failure_transient or len(record.job_retries) >= limit:
        if job.failure_transient:
            cause = f"{cause} (after {limit} retries, the line's max_job_retries)"
        return record_job_status(ctx, run_id, JobStatus.FAILED, error=cause)
    attempt = len(record.job_retries) + 1
    spec = job_spec_for(ctx.settings, record, attempt=attempt, champion=champion_to_compare(ctx, record))
    submitted = ctx.engine.submit_job(spec)
    logger.warning(
        "run %s: job %s failed for a transient cause (%s); resubmitted as %s (retry %d of %d)",
        run_id,
        job.name,
        cause,
        submitted.name,
        attempt,
        limit,
        extra={"run_id": run_id},
    )
    reason = (
        f"job {job.name} failed for a transient cause: {cause}; resubmitted as {submitted.name} ({attempt}/{limit})"
    )

    def resubmitted(current: RunRecord) -> RunRecord | None:
        if current.job_name != job.name or current.state not in (RunState.SUBMITTED, RunState.RUNNING):
            return None
        retry = JobRetry(at=ctx.now(), job_name=job.name, cause=cause)
        return advance(
            current,
            RunState.SUBMITTED,
            reason,
            ctx.now(),
            job_name=submitted.name,
            job_retries=[*current.job_retries, retry],
        )

    return ctx.ledger.transition(run_id, resubmitted)
