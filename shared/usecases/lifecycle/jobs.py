"""Use cases that follow a run's job: its status from events and the sweep, completion (carried as far as it
goes through promotion and rollout), cancellation, and the reconciliation of runs whose events were lost.

Every step reads the run's state first and writes its outcome with a guarded transition, so a duplicated or
late event repeats nothing: each step is idempotent, and the engine's creates are get-or-create.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from shared.api.events import JobEvent, ignore_reason
from shared.context import AppContext
from shared.domain.errors import AutopilotError, InvalidTransition
from shared.domain.jobs import JobStatus
from shared.domain.runs import (
    RunRecord,
    RunState,
)
from shared.usecases.lifecycle.promotion import review_gate_register
from shared.usecases.lifecycle.retries import retry_or_fail
from shared.usecases.lifecycle.rollout import deploy, smoke_test_and_shift
from shared.usecases.lifecycle.status import record_job_status
from shared.usecases.lifecycle.steps import StepFailed
from shared.usecases.queries import get_run

logger = logging.getLogger(__name__)


def complete_run(ctx: AppContext, run_id: str) -> RunRecord:
    """Carry a trained run as far as it goes: review, gate, register, deploy, smoke-test, shift traffic."""
    record = record_job_status(ctx, run_id, JobStatus.COMPLETED)
    steps: dict[RunState, Callable[[AppContext, RunRecord], RunRecord]] = {
        RunState.TRAINED: review_gate_register,
        RunState.REGISTERED: deploy,
        RunState.DEPLOYING: smoke_test_and_shift,
    }
    while record.state in steps:
        advanced = steps[record.state](ctx, record)
        if advanced.state == record.state:  # waiting on the engine (a deployment still provisioning)
            return advanced
        record = advanced
    return record


def handle_job_event(ctx: AppContext, event: JobEvent) -> str:
    """What on_job_event does with one Azure ML run event; returns what happened, for the log."""
    reason = ignore_reason(event, ctx.profile.workspace_topic)
    if reason is not None:
        return _ignored(event, reason)
    run_id, status = event.app_run_id, event.status
    assert run_id is not None and status is not None  # ignore_reason passes only events that carry both
    record = ctx.ledger.find(run_id)
    if record is None:
        return _ignored(event, f"unknown run {run_id}")
    if record.job_name not in (None, event.job_name):
        return _ignored(event, f"run {record.run_id} belongs to job {record.job_name}, not {event.job_name}")
    if status == JobStatus.COMPLETED:
        try:
            record = complete_run(ctx, run_id)
        except StepFailed as exc:
            return f"run {run_id} failed: {exc.message}"  # recorded on the run; a redelivery would not help
    elif status == JobStatus.FAILED:
        record = retry_or_fail(ctx, run_id, ctx.engine.get_job(event.job_name))
    elif status == JobStatus.CANCELED:
        job = ctx.engine.get_job(event.job_name)
        record = record_job_status(ctx, run_id, status, error=job.error)
    else:
        record = record_job_status(ctx, run_id, status)
    return f"run {run_id}: {record.state}"


def _ignored(event: JobEvent, reason: str) -> str:
    logger.info("job event %s ignored: %s", event.event_id, reason, extra={"run_id": event.app_run_id})
    return f"ignored: {reason}"


def cancel_run(ctx: AppContext, run_id: str) -> RunRecord:
    record = get_run(ctx, run_id)  # validates the id; 404 when unknown
    if record.state not in (RunState.SUBMITTED, RunState.RUNNING):
        raise InvalidTransition(f"run {run_id} is {record.state}; only submitted or running runs can be canceled")
    assert record.job_name is not None  # set on the transition to submitted
    ctx.engine.cancel_job(record.job_name)
    return record_job_status(ctx, run_id, JobStatus.CANCELED, error="canceled on request")


def reconcile_runs(ctx: AppContext, active: list[RunRecord] | None = None) -> list[str]:
    """Catch up on runs whose events were lost (or never sent: failed deployments emit none) by polling the engine.
    `active`: the runs in ACTIVE_STATES, when the caller has read them already."""
    now = ctx.now()
    stale_after = timedelta(minutes=ctx.settings.reconcile_after_minutes)
    outcomes = []
    if active is None:
        active = ctx.ledger.list(states=ACTIVE_STATES, limit=10_000)
    for record in active:
        try:
            if record.state in (RunState.SUBMITTED, RunState.RUNNING) and record.job_name:
                job = ctx.engine.get_job(record.job_name)
                if job.status == JobStatus.COMPLETED:
                    record = complete_run(ctx, record.run_id)
                elif job.status == JobStatus.FAILED:
                    record = retry_or_fail(ctx, record.run_id, job)
                elif job.status != JobStatus.QUEUED:
                    record = record_job_status(ctx, record.run_id, job.status, error=job.error)
            elif record.state in _RESUMABLE and now - record.updated_at > stale_after:
                record = complete_run(ctx, record.run_id)
            else:
                continue
            outcomes.append(f"{record.run_id}: {record.state}")
        except AutopilotError as exc:  # one run's trouble must not stop the sweep
            logger.warning("reconcile %s: %s", record.run_id, exc.message, extra={"run_id": record.run_id})
            outcomes.append(f"{record.run_id}: {exc.code}")
    return outcomes


_RESUMABLE = frozenset({RunState.TRAINED, RunState.REGISTERED, RunState.DEPLOYING})
# what the sweep reconciles: a run with a job under way, or one its completion left between steps
ACTIVE_STATES = frozenset({RunState.SUBMITTED, RunState.RUNNING}) | _RESUMABLE
