"""Blue/green rollout: a deployment at 0%, the smoke test pinned to it, then the traffic shift (shift.py), or the
rollback. Every change to the endpoint happens under its lease.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import orjson

from shared.adapters.leases import EvaluationUnderWay
from shared.context import AppContext
from shared.domain.errors import AutopilotError
from shared.domain.evaluation.decision import refusal_code
from shared.domain.evaluation.degeneration import DegenerationPolicy, degeneration_flags, describe_flags
from shared.domain.idle import entered
from shared.domain.naming import deployment_name_for, endpoint_name_for
from shared.domain.redaction import redact_secrets
from shared.domain.runs import (
    EndpointRef,
    RunError,
    RunRecord,
    RunState,
    SmokeTestResult,
    advance_from,
)
from shared.domain.scoring import batch_answers, scoring_request, smoke_test_conversation
from shared.domain.tags import MANAGED_TAG
from shared.engine.base import ModelRef, ScoringRequest
from shared.usecases.lifecycle.answers import EvaluationFailed
from shared.usecases.lifecycle.evaluation import evaluate_challenger
from shared.usecases.lifecycle.shift import shift_traffic
from shared.usecases.lifecycle.steps import attempt

logger = logging.getLogger(__name__)

DEPLOYMENT_LOG_LINES = 100
DEPLOYMENT_LOG_CHARS = 4000  # the end of a failed deployment's log kept on the run
SCORING_TIMEOUT = "scoring_timeout"  # the EngineError code of an invoke that got no answer within its timeout_s


def deploy(ctx: AppContext, record: RunRecord) -> RunRecord:
    """A new deployment at 0%, under the endpoint's lease (one change to an endpoint at a time)."""
    registered = record.model
    assert registered is not None  # set on the transition to registered
    with ctx.changing_endpoint(endpoint_name_for(registered.name, ctx.profile.endpoint_scope)):
        current = ctx.ledger.get(record.run_id)
        if current.state != RunState.REGISTERED:
            return current  # a duplicate delivery deployed it meanwhile
        deploying, refused = _deploy(ctx, current)
    if refused is not None:  # rolled back under a lease of its own: a lease is not taken twice by one change
        return _roll_back_failed_deployment(ctx, deploying, f"refused to start ({refused.code}: {refused.message})")
    return deploying


def _deploy(ctx: AppContext, record: RunRecord) -> tuple[RunRecord, AutopilotError | None]:
    """The endpoint (get-or-create) and the run's deployment at 0%; the run moves to deploying. A deployment the
    engine refuses for good (it cannot start: a model that does not load, a size that does not exist) is returned as
    the error, for the caller to roll back with its logs, as the README promises for failed deployments."""
    engine, run_id, registered = ctx.engine, record.run_id, record.model
    assert registered is not None  # set on the transition to registered
    endpoint_name = endpoint_name_for(registered.name, ctx.profile.endpoint_scope)
    deployment = deployment_name_for(run_id)
    endpoint = attempt(
        ctx,
        record,
        "deploy",
        "create_endpoint",
        lambda: engine.create_or_update_endpoint(endpoint_name, {MANAGED_TAG: "true", "model": registered.name}),
    )
    serving = [
        name
        for name, weight in sorted(endpoint.traffic.items(), key=lambda kv: -kv[1])
        if weight > 0 and name != deployment
    ]
    model = ModelRef(name=registered.name, version=registered.version)

    def create() -> AutopilotError | None:
        try:
            engine.create_deployment(endpoint_name, deployment, model)
        except AutopilotError as exc:
            if exc.transient:
                raise  # counted and retried by `attempt`
            return exc
        return None

    refused = attempt(ctx, record, "deploy", "create_deployment", create)
    ref = EndpointRef(
        name=endpoint_name,
        deployment=deployment,
        scoring_uri=endpoint.scoring_uri,
        previous_deployment=serving[0] if serving else None,
    )
    reason = f"deployment {deployment} " + ("refused" if refused else "created") + f" on {endpoint_name} at 0% traffic"
    deploying = ctx.ledger.transition(
        run_id, advance_from(RunState.REGISTERED, RunState.DEPLOYING, reason, ctx.now(), endpoint=ref)
    )
    return deploying, refused


def smoke_test_and_shift(ctx: AppContext, record: RunRecord) -> RunRecord:
    engine, run_id, ref, registered = ctx.engine, record.run_id, record.endpoint, record.model
    assert ref is not None and registered is not None  # both set on the transition to deploying, or before it
    deployment = attempt(
        ctx, record, "deploy", "get_deployment", lambda: engine.get_deployment(ref.name, ref.deployment)
    )
    if deployment is None or deployment.has_failed:
        return _roll_back_failed_deployment(ctx, record, deployment.state if deployment else "gone")
    if not deployment.is_ready:  # still provisioning: an answer, not a failure; nothing is written
        deadline = timedelta(minutes=ctx.settings.deploy_timeout_minutes)
        began = entered(record, RunState.DEPLOYING)
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
    try:
        with ctx.evaluating(run_id):
            current = ctx.ledger.get(run_id)
            if current.state != RunState.DEPLOYING:
                return current  # another delivery finished it while this one waited
            return _test_evaluate_and_shift(ctx, current)
    except EvaluationUnderWay:
        logger.info("run %s: another delivery is evaluating it", run_id, extra={"run_id": run_id})
        return record


def _test_evaluate_and_shift(ctx: AppContext, record: RunRecord) -> RunRecord:
    run_id = record.run_id
    result = smoke_test(ctx, record)
    if not result.passed and result.answer is None:  # no answer at all: there is nothing to evaluate
        return _smoke_test_failed(ctx, record, result)
    # A degenerate smoke-test answer fails the run too, but after the evaluation: the refusal then carries the
    # evidence (every answer, both sides' figures), not one sampled answer.
    try:
        evaluation = evaluate_challenger(ctx, record)
    except EvaluationFailed as exc:
        return _roll_back(ctx, record, exc.message, RunError(code=exc.code, message=exc.message), smoke_test=result)
    if not evaluation.passed:
        reasons = "; ".join(check.reason for check in evaluation.failed)
        logger.warning("run %s refused by its evaluation: %s", run_id, reasons, extra={"run_id": run_id})
        return _roll_back(
            ctx,
            ctx.ledger.get(run_id),
            f"evaluation: {reasons}",
            RunError(code=refusal_code(evaluation.checks), message=reasons),
            smoke_test=result,
            evaluation=evaluation,
        )
    if not result.passed:
        return _smoke_test_failed(ctx, ctx.ledger.get(run_id), result)
    return shift_traffic(ctx, ctx.ledger.get(run_id), result)


def _smoke_test_failed(ctx: AppContext, record: RunRecord, result: SmokeTestResult) -> RunRecord:
    logger.warning(
        "run %s smoke test failed: %s; rolling back", record.run_id, result.error, extra={"run_id": record.run_id}
    )
    return _roll_back(
        ctx,
        record,
        f"smoke test failed: {result.error}",
        RunError(code="smoke_test_failed", message=result.error or "no answer"),
        smoke_test=result,
    )


def _roll_back_failed_deployment(
    ctx: AppContext, record: RunRecord, state: str, *, code: str = "deployment_failed"
) -> RunRecord:
    """A deployment that did not come up: keep the end of its logs on the run, then roll back."""
    engine, run_id, ref = ctx.engine, record.run_id, record.endpoint
    assert ref is not None  # set on the transition to deploying
    try:
        logs = engine.deployment_logs(ref.name, ref.deployment, DEPLOYMENT_LOG_LINES)
    except AutopilotError as exc:
        logs = f"(its logs could not be read: {exc.message})"
    logger.warning("run %s: deployment %s is %s; rolling back", run_id, ref.deployment, state, extra={"run_id": run_id})
    tail = redact_secrets(logs[-DEPLOYMENT_LOG_CHARS:])
    message = f"deployment {ref.deployment} is {state}. Its log ends with:\n{tail}"
    return _roll_back(ctx, record, f"deployment {ref.deployment} {state.lower()}", RunError(code=code, message=message))


def _roll_back(ctx: AppContext, record: RunRecord, reason: str, error: RunError, **changes: object) -> RunRecord:
    """Delete the new deployment and end the run rolled_back, under the endpoint's lease; the traffic stays where it
    was (this run's deployment never had any)."""
    ref = record.endpoint
    assert ref is not None  # set on the transition to deploying
    with ctx.changing_endpoint(ref.name):
        current = ctx.ledger.get(record.run_id)
        if current.state != RunState.DEPLOYING:
            return current  # a duplicate delivery ended it meanwhile
        attempt(
            ctx,
            current,
            "rollback",
            "delete_deployment",
            lambda: ctx.engine.delete_deployment(ref.name, ref.deployment),
        )
        kept = f"; traffic stays on {ref.previous_deployment}" if ref.previous_deployment else ""
        return ctx.ledger.transition(
            record.run_id,
            advance_from(RunState.DEPLOYING, RunState.ROLLED_BACK, reason + kept, ctx.now(), error=error, **changes),
        )


def smoke_test(ctx: AppContext, record: RunRecord) -> SmokeTestResult:
    """The seed's request (a held-out conversation), pinned to the new deployment: an answer in time that the
    evaluation's degeneration checks do not flag (empty, no stop, repetition, template leak)."""
    artifacts, ref = record.artifacts, record.endpoint
    # the prepared splits are written before a run is submitted; the endpoint is set on the transition to deploying
    assert artifacts.test is not None and ref is not None
    container, _, name = artifacts.test.partition("/")
    first_line = next(iter(ctx.store.iter_lines(container, name)), None)
    if first_line is None:
        assert artifacts.train is not None  # written with the test split
        container, _, name = artifacts.train.partition("/")
        first_line = next(iter(ctx.store.iter_lines(container, name)))
    request = scoring_request(smoke_test_conversation(orjson.loads(first_line)))
    timeout_s = ctx.settings.smoke_test_timeout_s
    started = time.monotonic()
    try:
        response = ctx.engine.invoke(ScoringRequest(ref.name, request, ref.deployment, timeout_s))
    except AutopilotError as exc:
        error = f"no answer within {timeout_s:g} s" if exc.code == SCORING_TIMEOUT else f"{exc.code}: {exc.message}"
        return SmokeTestResult(passed=False, seconds=time.monotonic() - started, error=error)
    seconds = time.monotonic() - started
    try:
        ((answer, finish_reason),) = batch_answers(response, 1)
    except ValueError:
        return SmokeTestResult(passed=False, seconds=seconds, error="the deployment's answer has no text")
    if not answer.strip():
        return SmokeTestResult(passed=False, seconds=seconds, error="the deployment answered with an empty text")
    flags = degeneration_flags(
        answer,
        max_new_tokens=int(request["input_data"]["parameters"]["max_new_tokens"]),
        finish_reason=finish_reason,
        policy=DegenerationPolicy(repetition_threshold=ctx.settings.eval_repetition_threshold),
    )
    if flags:
        error = f"the answer is degenerate ({describe_flags(flags)}): {answer[:120]!r}"
        return SmokeTestResult(passed=False, seconds=seconds, answer=answer[:200], error=error)
    return SmokeTestResult(passed=True, seconds=seconds, answer=answer[:200])
