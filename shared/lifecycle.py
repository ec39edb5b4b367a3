"""Use cases after submission: follow the job, then review, gate, register, deploy, smoke-test, shift traffic.

Every step reads the run's state first and writes its outcome with a guarded transition, so a duplicated or
late event repeats nothing: each step is idempotent, and the engine's creates are get-or-create.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import orjson

from shared.charts import loss_curve_svg
from shared.context import AppContext
from shared.engine.base import MANAGED_TAG, RUN_TAG, JobStatus, ModelRef
from shared.errors import AutopilotError, InvalidTransition, NotFound
from shared.events import JobEvent, ignore_reason
from shared.gate import GatePolicy, quality_gate
from shared.naming import deployment_name_for, endpoint_name_for, finetuned_model_name
from shared.redaction import redact_secrets
from shared.runs import (
    EndpointRef,
    ModelVersion,
    RunError,
    RunMetrics,
    RunRecord,
    RunState,
    SmokeTestResult,
    add_attempt,
    advance_from,
    failed_tries,
    resolve_attempts,
)
from shared.scoring import answer_text, scoring_request, smoke_test_conversation

logger = logging.getLogger(__name__)

CHAMPION = "champion"
DEPLOYMENT_LOG_LINES = 100
DEPLOYMENT_LOG_CHARS = 4000  # the end of a failed deployment's log kept on the run
SCORING_TIMEOUT = "scoring_timeout"  # the EngineError code of an invoke that got no answer within its timeout_s
T = TypeVar("T")

# How a job status moves a run, from the states it may come from.
_JOB_TRANSITIONS: dict[JobStatus, tuple[frozenset[RunState], RunState]] = {
    JobStatus.RUNNING: (frozenset({RunState.SUBMITTED}), RunState.RUNNING),
    JobStatus.COMPLETED: (frozenset({RunState.SUBMITTED, RunState.RUNNING}), RunState.TRAINED),
    JobStatus.FAILED: (frozenset({RunState.SUBMITTED, RunState.RUNNING}), RunState.FAILED),
    JobStatus.CANCELED: (frozenset({RunState.SUBMITTED, RunState.RUNNING}), RunState.CANCELED),
}


def model_name_for(ctx: AppContext, record: RunRecord) -> str:
    return finetuned_model_name(record.base_model, ctx.settings.finetuned_model_suffix)


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


def complete_run(ctx: AppContext, run_id: str) -> RunRecord:
    """Carry a trained run as far as it goes: review, gate, register, deploy, smoke-test, shift traffic."""
    record = record_job_status(ctx, run_id, JobStatus.COMPLETED)
    steps: dict[RunState, Callable[[AppContext, RunRecord], RunRecord]] = {
        RunState.TRAINED: _review_gate_register,
        RunState.REGISTERED: _deploy,
        RunState.DEPLOYING: _smoke_test_and_shift,
    }
    while record.state in steps:
        advanced = steps[record.state](ctx, record)
        if advanced.state == record.state:  # waiting on the engine (a deployment still provisioning)
            return advanced
        record = advanced
    return record


def _review_gate_register(ctx: AppContext, record: RunRecord) -> RunRecord:
    engine, run_id = ctx.engine, record.run_id
    job_metrics = _attempt(ctx, record, "review", "job_metrics", lambda: engine.job_metrics(record.job_name))
    metrics = RunMetrics(
        train_loss=job_metrics.train_loss,
        eval_loss=job_metrics.eval_loss,
        base_eval_loss=job_metrics.base_eval_loss,
        perplexity=job_metrics.perplexity,
        mean_token_accuracy=job_metrics.mean_token_accuracy,
    )
    artifacts = _write_training_report(ctx, record, metrics, job_metrics.loss_curve)
    model_name = model_name_for(ctx, record)
    champion = _attempt(ctx, record, "review", "get_model", lambda: engine.get_model(model_name, alias=CHAMPION))
    champion_loss = _float_tag(champion.tags.get("eval_loss")) if champion else None
    policy = GatePolicy(
        ctx.settings.gate_min_improvement,
        ctx.settings.gate_champion_tolerance,
        require_base_eval=ctx.profile.gate_requires_base_eval,
    )
    gate = quality_gate(
        metrics,
        policy,
        champion=f"{champion.name}:{champion.version}" if champion else None,
        champion_eval_loss=champion_loss,
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
    model = _attempt(
        ctx, record, "register", "register_model", lambda: engine.register_model(record.job_name, model_name, tags)
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


def _deploy(ctx: AppContext, record: RunRecord) -> RunRecord:
    engine, run_id = ctx.engine, record.run_id
    endpoint_name = endpoint_name_for(record.model.name, ctx.profile.endpoint_scope)
    deployment = deployment_name_for(run_id)
    endpoint = _attempt(
        ctx,
        record,
        "deploy",
        "create_endpoint",
        lambda: engine.create_or_update_endpoint(endpoint_name, {MANAGED_TAG: "true", "model": record.model.name}),
    )
    serving = [
        name
        for name, weight in sorted(endpoint.traffic.items(), key=lambda kv: -kv[1])
        if weight > 0 and name != deployment
    ]
    model = ModelRef(name=record.model.name, version=record.model.version)
    _attempt(
        ctx, record, "deploy", "create_deployment", lambda: engine.create_deployment(endpoint_name, deployment, model)
    )
    ref = EndpointRef(
        name=endpoint_name,
        deployment=deployment,
        scoring_uri=endpoint.scoring_uri,
        previous_deployment=serving[0] if serving else None,
    )
    return ctx.ledger.transition(
        run_id,
        advance_from(
            RunState.REGISTERED,
            RunState.DEPLOYING,
            f"deployment {deployment} created on {endpoint_name} at 0% traffic",
            ctx.now(),
            endpoint=ref,
        ),
    )


def _smoke_test_and_shift(ctx: AppContext, record: RunRecord) -> RunRecord:
    engine, run_id, ref = ctx.engine, record.run_id, record.endpoint
    deployment = _attempt(
        ctx, record, "deploy", "get_deployment", lambda: engine.get_deployment(ref.name, ref.deployment)
    )
    if deployment is None or deployment.has_failed:
        return _roll_back_failed_deployment(ctx, record, deployment.state if deployment else "gone")
    if not deployment.is_ready:  # still provisioning: an answer, not a failure; nothing is written
        deadline = timedelta(minutes=ctx.settings.deploy_timeout_minutes)
        began = _entered(record, RunState.DEPLOYING)
        if began is not None and ctx.now() - began > deadline:
            minutes = (ctx.now() - began).total_seconds() / 60
            state = f"still {deployment.state} after {minutes:.0f} min (DEPLOY_TIMEOUT_MINUTES)"
            return _roll_back_failed_deployment(ctx, record, state, code="deployment_timeout")
        logger.info(
            "run %s: deployment %s is %s; the sweep checks it again",
            run_id,
            ref.deployment,
            deployment.state,
            extra={"run_id": run_id},
        )
        return record
    result = smoke_test(ctx, record)
    if not result.passed:
        logger.warning("run %s smoke test failed: %s; rolling back", run_id, result.error, extra={"run_id": run_id})
        return _roll_back(
            ctx,
            record,
            f"smoke test failed: {result.error}",
            RunError(code="smoke_test_failed", message=result.error or "no answer"),
            smoke_test=result,
        )
    keep = ref.previous_deployment if ctx.settings.keep_previous_deployment else None
    traffic = {ref.deployment: 100, **({keep: 0} if keep else {})}
    endpoint = _attempt(ctx, record, "shift", "set_traffic", lambda: engine.set_traffic(ref.name, traffic))
    for name in endpoint.traffic:
        if name not in traffic:
            # one operation per deployment: deleting one must not clear the failures of deleting another
            _attempt(
                ctx,
                record,
                "retire",
                f"delete_deployment {name}",
                lambda name=name: engine.delete_deployment(ref.name, name),
            )
    _attempt(
        ctx,
        record,
        "promote",
        "set_model_alias",
        lambda: engine.set_model_alias(ModelRef(name=record.model.name, version=record.model.version), CHAMPION),
    )
    return ctx.ledger.transition(
        run_id,
        advance_from(
            RunState.DEPLOYING,
            RunState.DEPLOYED,
            f"smoke test passed in {result.seconds:.1f} s; 100% traffic on {ref.deployment}",
            ctx.now(),
            smoke_test=result,
            endpoint=ref.model_copy(update={"scoring_uri": endpoint.scoring_uri}),
        ),
    )


def _roll_back_failed_deployment(
    ctx: AppContext, record: RunRecord, state: str, *, code: str = "deployment_failed"
) -> RunRecord:
    """A deployment that did not come up: keep the end of its logs on the run, then roll back."""
    engine, run_id, ref = ctx.engine, record.run_id, record.endpoint
    try:
        logs = engine.deployment_logs(ref.name, ref.deployment, DEPLOYMENT_LOG_LINES)
    except AutopilotError as exc:
        logs = f"(its logs could not be read: {exc.message})"
    logger.warning("run %s: deployment %s is %s; rolling back", run_id, ref.deployment, state, extra={"run_id": run_id})
    tail = redact_secrets(logs[-DEPLOYMENT_LOG_CHARS:])
    message = f"deployment {ref.deployment} is {state}. Its log ends with:\n{tail}"
    return _roll_back(
        ctx, record, f"deployment {ref.deployment} {state.lower()}", RunError(code=code, message=message)
    )


def _roll_back(ctx: AppContext, record: RunRecord, reason: str, error: RunError, **changes: object) -> RunRecord:
    """Delete the new deployment and end the run rolled_back; the traffic stays where it was."""
    ref = record.endpoint
    _attempt(
        ctx, record, "rollback", "delete_deployment", lambda: ctx.engine.delete_deployment(ref.name, ref.deployment)
    )
    kept = f"; traffic stays on {ref.previous_deployment}" if ref.previous_deployment else ""
    return ctx.ledger.transition(
        record.run_id,
        advance_from(RunState.DEPLOYING, RunState.ROLLED_BACK, reason + kept, ctx.now(), error=error, **changes),
    )


def smoke_test(ctx: AppContext, record: RunRecord) -> SmokeTestResult:
    """The seed's request (a held-out conversation), pinned to the new deployment: a non-empty answer in time."""
    container, _, name = record.artifacts.test.partition("/")
    first_line = next(iter(_lines(ctx, container, name)), None)
    if first_line is None:
        container, _, name = record.artifacts.train.partition("/")
        first_line = next(iter(_lines(ctx, container, name)))
    request = scoring_request(smoke_test_conversation(orjson.loads(first_line)))
    timeout_s = ctx.settings.smoke_test_timeout_s
    started = time.monotonic()
    try:
        response = ctx.engine.invoke(record.endpoint.name, request, record.endpoint.deployment, timeout_s=timeout_s)
    except AutopilotError as exc:
        error = f"no answer within {timeout_s:g} s" if exc.code == SCORING_TIMEOUT else f"{exc.code}: {exc.message}"
        return SmokeTestResult(passed=False, seconds=time.monotonic() - started, error=error)
    answer = answer_text(response)
    seconds = time.monotonic() - started
    if not answer or not answer.strip():
        return SmokeTestResult(passed=False, seconds=seconds, error="the deployment answered with an empty text")
    return SmokeTestResult(passed=True, seconds=seconds, answer=answer[:200])


def _attempt(ctx: AppContext, record: RunRecord, stage: str, operation: str, call: Callable[[], T]) -> T:
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
            f"| perplexity | - | {show(metrics.perplexity)} |",
            f"| mean token accuracy | - | {show(metrics.mean_token_accuracy)} |",
            f"| final train loss | - | {show(metrics.train_loss)} |",
            "",
            "![loss curve](loss_curve.svg)",
            "",
        ]
    )


def _lines(ctx: AppContext, container: str, name: str):
    pending = b""
    for chunk in ctx.store.iter_chunks(container, name):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


def _float_tag(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def handle_job_event(ctx: AppContext, event: JobEvent) -> str:
    """What on_job_event does with one Azure ML run event; returns what happened, for the log."""
    reason = ignore_reason(event, ctx.profile.workspace_topic)
    if reason is None:
        record = ctx.ledger.find(event.app_run_id)
        if record is None:
            reason = f"unknown run {event.app_run_id}"
        elif record.job_name not in (None, event.job_name):
            reason = f"run {record.run_id} belongs to job {record.job_name}, not {event.job_name}"
    if reason is not None:
        logger.info("job event %s ignored: %s", event.event_id, reason, extra={"run_id": event.app_run_id})
        return f"ignored: {reason}"
    run_id = event.app_run_id
    if event.status == JobStatus.COMPLETED:
        try:
            record = complete_run(ctx, run_id)
        except StepFailed as exc:
            return f"run {run_id} failed: {exc.message}"  # recorded on the run; a redelivery would not help
    elif event.status in (JobStatus.FAILED, JobStatus.CANCELED):
        job = ctx.engine.get_job(event.job_name)
        record = record_job_status(ctx, run_id, event.status, error=job.error)
    else:
        record = record_job_status(ctx, run_id, event.status)
    return f"run {run_id}: {record.state}"


def cancel_run(ctx: AppContext, run_id: str) -> RunRecord:
    record = ctx.ledger.get(run_id)
    if record.state not in (RunState.SUBMITTED, RunState.RUNNING):
        raise InvalidTransition(f"run {run_id} is {record.state}; only submitted or running runs can be canceled")
    ctx.engine.cancel_job(record.job_name)
    return record_job_status(ctx, run_id, JobStatus.CANCELED, error="canceled on request")


def reconcile_runs(ctx: AppContext) -> list[str]:
    """Catch up on runs whose events were lost (or never sent: failed deployments emit none) by polling the engine."""
    now = ctx.now()
    stale_after = timedelta(minutes=ctx.settings.reconcile_after_minutes)
    outcomes = []
    for record in ctx.ledger.list(limit=1000):
        try:
            if record.state in (RunState.SUBMITTED, RunState.RUNNING) and record.job_name:
                job = ctx.engine.get_job(record.job_name)
                if job.status == JobStatus.COMPLETED:
                    record = complete_run(ctx, record.run_id)
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


def teardown_idle_endpoints(ctx: AppContext) -> list[str]:
    """Delete managed endpoints idle for IDLE_MINUTES (and past the grace period after creation). Their runs become
    torn_down, keeping the model and endpoint name that restore_endpoint needs. Untagged endpoints are never touched.

    Idle counts from the last request or the last deployment to the endpoint, whichever is later: Azure Monitor
    takes minutes to show the smoke test's request, so an endpoint that just got a new model must not read as
    idle since its creation."""
    now = ctx.now()
    idle_for = timedelta(minutes=ctx.settings.idle_minutes)
    grace = timedelta(minutes=ctx.settings.idle_grace_minutes)
    torn_down = []
    busy = _endpoints_being_deployed(ctx)
    deployed = ctx.ledger.list(state=RunState.DEPLOYED, limit=1000)
    for endpoint in ctx.engine.list_endpoints():
        if not endpoint.is_managed or endpoint.name in busy:
            continue
        serving = [record for record in deployed if record.endpoint and record.endpoint.name == endpoint.name]
        deployed_at = [_entered(record, RunState.DEPLOYED) for record in serving]
        last_use = last_activity(endpoint.created_at, endpoint.last_request_at, deployed_at)
        if endpoint.created_at is None or now - endpoint.created_at < grace or last_use is None:
            continue
        if now - last_use < idle_for:
            continue
        idle_minutes = (now - last_use).total_seconds() / 60
        ctx.engine.delete_endpoint(endpoint.name)
        reason = f"endpoint {endpoint.name} idle for {idle_minutes:.1f} min: torn down; the model is kept for restore"
        for record in serving:
            ctx.ledger.transition(record.run_id, advance_from(RunState.DEPLOYED, RunState.TORN_DOWN, reason, now))
        logger.info("%s", reason)
        torn_down.append(endpoint.name)
    return torn_down


def last_activity(
    created_at: datetime | None, last_request_at: datetime | None, deployed_at: list[datetime | None]
) -> datetime | None:
    """When the endpoint was last used or changed: its latest request, deployment or creation."""
    moments = [moment for moment in (created_at, last_request_at, *deployed_at) if moment is not None]
    return max(moments) if moments else None


def _entered(record: RunRecord, state: RunState) -> datetime | None:
    """When the run last moved to `state` (a restore moves it to deploying and deployed again)."""
    moves = [t.at for t in record.history if t.to_state == state]
    return moves[-1] if moves else None


def _endpoints_being_deployed(ctx: AppContext) -> set[str]:
    """Endpoints a run is deploying to right now: never idle, whatever their request count says."""
    busy = set()
    for state in (RunState.REGISTERED, RunState.DEPLOYING):
        for record in ctx.ledger.list(state=state, limit=1000):
            if record.endpoint is not None:
                busy.add(record.endpoint.name)
            elif record.model is not None:
                busy.add(endpoint_name_for(record.model.name, ctx.profile.endpoint_scope))
    return busy


def restore_endpoint(ctx: AppContext, endpoint_name: str) -> RunRecord:
    """Re-create a torn-down endpoint from its registered champion, smoke-test it and give it all traffic.

    The run moves to `deploying` before anything is created, so the idle sweep leaves the endpoint alone while it
    comes up; a restore interrupted by a transient error is picked up again by the next call."""
    candidates = [
        r
        for r in ctx.ledger.list(limit=1000)
        if r.endpoint
        and r.endpoint.name == endpoint_name
        and (
            r.state == RunState.TORN_DOWN
            or (r.state == RunState.DEPLOYING and r.history[-1].from_state == RunState.TORN_DOWN)
        )
    ]
    if not candidates:
        raise NotFound(f"no torn-down endpoint named {endpoint_name}", code="endpoint_not_found")
    record = max(candidates, key=lambda r: r.updated_at)
    if record.state == RunState.TORN_DOWN:
        champion = ctx.engine.get_model(record.model.name, alias=CHAMPION)
        model = champion or ModelRef(name=record.model.name, version=record.model.version)
        ref = EndpointRef(name=endpoint_name, deployment=deployment_name_for(record.run_id))
        record = ctx.ledger.transition(
            record.run_id,
            advance_from(
                RunState.TORN_DOWN,
                RunState.DEPLOYING,
                f"restore: {model.name} version {model.version} on {endpoint_name}",
                ctx.now(),
                endpoint=ref,
                model=ModelVersion(name=model.name, version=model.version),
            ),
        )
    model = ModelRef(name=record.model.name, version=record.model.version)
    endpoint = _attempt(
        ctx,
        record,
        "restore",
        "create_endpoint",
        lambda: ctx.engine.create_or_update_endpoint(endpoint_name, {MANAGED_TAG: "true", "model": model.name}),
    )
    _attempt(
        ctx,
        record,
        "restore",
        "create_deployment",
        lambda: ctx.engine.create_deployment(endpoint_name, record.endpoint.deployment, model),
    )
    ctx.ledger.update(
        record.run_id,
        lambda r: (
            r.model_copy(update={"endpoint": r.endpoint.model_copy(update={"scoring_uri": endpoint.scoring_uri})})
            if r.state == RunState.DEPLOYING
            else None
        ),
    )
    return complete_run(ctx, record.run_id)
