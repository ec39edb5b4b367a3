"""The answers of one deployment to an evaluation's conversations, asked in batches through the scoring contract, and
the deployment they are compared with: the champion's, or a base-model deployment made for the evaluation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.context import AppContext
from shared.domain.errors import AutopilotError
from shared.domain.evaluation.evidence import Baseline
from shared.domain.runs import RunRecord, add_attempt, failed_tries
from shared.domain.scoring import batch_answers, greedy_batch_request
from shared.domain.tags import CHAMPION
from shared.engine.base import ScoringRequest
from shared.usecases.lifecycle.steps import champion_is_newer

logger = logging.getLogger(__name__)

STAGE = "evaluate"


class EvaluationFailed(AutopilotError):
    """The challenger's deployment could not be evaluated (it refused or kept failing): the run is rolled back."""

    code = "evaluation_failed"


@dataclass(frozen=True)
class ReferenceDeployment:
    baseline: Baseline
    deployment: str | None = None
    model: str | None = None  # "name:version", or the base model's name
    notes: tuple[str, ...] = ()
    temporary: bool = False  # made for this evaluation: deleted after it
    champion_is_newer: bool = False


class Answerer:
    """Asks one run's endpoint, pinned to one deployment at a time, `EVAL_BATCH_SIZE` conversations per call."""

    def __init__(self, ctx: AppContext, record: RunRecord) -> None:
        self.ctx, self.record = ctx, record

    def answer_all(
        self, deployment: str, conversations: list[list[dict[str, str]]], *, side: str, soft: bool = False
    ) -> list[tuple[str, str | None]] | None:
        """(text, finish reason) per conversation. A transient failure is noted and raised (the delivery is retried)
        until it has happened MAX_STEP_ATTEMPTS times; then, or on a permanent one, EvaluationFailed, or None when
        `soft` (the baseline's side: the challenger is then compared with nothing)."""
        ctx, record = self.ctx, self.record
        assert record.endpoint is not None  # set on the transition to deploying
        size, answers = ctx.settings.eval_batch_size, []
        for start in range(0, len(conversations), size):
            batch = conversations[start : start + size]
            request = ScoringRequest(
                record.endpoint.name,
                greedy_batch_request(batch, ctx.settings.eval_max_new_tokens),
                deployment,
                ctx.settings.eval_timeout_s,
            )
            try:
                answers += batch_answers(ctx.engine.invoke(request), len(batch))
            except AutopilotError as exc:
                self._failed(deployment, side, exc, soft)
                return None
            except ValueError as exc:  # an answer of the wrong shape
                self._failed(deployment, side, EvaluationFailed(f"{deployment}: {exc}"), soft)
                return None
            logger.info(
                "run %s evaluation: %s %s answered %d/%d",
                record.run_id,
                side,
                deployment,
                len(answers),
                len(conversations),
                extra={"run_id": record.run_id},
            )
        return answers

    def _failed(self, deployment: str, side: str, exc: AutopilotError, soft: bool) -> None:
        """Raises, unless `soft` and the failure is final (the caller then answers None)."""
        ctx, run_id, operation = self.ctx, self.record.run_id, f"invoke {side}"
        updated = ctx.ledger.update(
            run_id,
            lambda r: add_attempt(
                r, stage=STAGE, operation=operation, code=exc.code, message=exc.message, now=ctx.now()
            ),
        )
        if exc.transient and failed_tries(updated, stage=STAGE, operation=operation) < ctx.settings.max_step_attempts:
            raise exc
        logger.warning(
            "run %s evaluation: %s %s failed: %s", run_id, side, deployment, exc.message, extra={"run_id": run_id}
        )
        if not soft:
            raise EvaluationFailed(f"the challenger's deployment {deployment} could not be evaluated: {exc.message}")


def reference_deployment(ctx: AppContext, record: RunRecord) -> ReferenceDeployment:
    """The champion's deployment where it serves on the endpoint; else a base-model deployment, where the engine
    serves base models; else nothing."""
    ref, registered = record.endpoint, record.model
    assert ref is not None and registered is not None  # set on the transitions to deploying and registered
    engine = ctx.engine
    if ref.previous_deployment:
        serving = engine.get_deployment(ref.name, ref.previous_deployment)
        if serving is not None and serving.is_ready:
            label = f"{serving.model.name}:{serving.model.version}"
            champion = engine.get_model(registered.name, alias=CHAMPION)
            newer = (
                champion is not None
                and f"{champion.name}:{champion.version}" == label
                and champion_is_newer(ctx, record, champion)
            )
            return ReferenceDeployment(Baseline.CHAMPION, serving.name, label, champion_is_newer=newer)
    if not ctx.profile.serves_base_model:
        return ReferenceDeployment(Baseline.NONE)
    name = "b-" + record.run_id.removeprefix("ft-")
    try:
        with ctx.changing_endpoint(ref.name):
            engine.create_base_model_deployment(ref.name, name, record.base_model)
    except AutopilotError as exc:
        if exc.transient:
            raise
        note = f"the base model {record.base_model} could not be deployed to compare with ({exc.code}: {exc.message})"
        return ReferenceDeployment(Baseline.NONE, notes=(note,))
    return ReferenceDeployment(Baseline.BASE, name, record.base_model, temporary=True)


def retire_reference(ctx: AppContext, record: RunRecord, reference: ReferenceDeployment) -> None:
    """Delete a deployment made for the evaluation; a failure is logged (the next shift retires what is left)."""
    if not reference.temporary or reference.deployment is None or record.endpoint is None:
        return
    try:
        with ctx.changing_endpoint(record.endpoint.name):
            ctx.engine.delete_deployment(record.endpoint.name, reference.deployment)
    except AutopilotError as exc:
        logger.warning(
            "run %s: the evaluation's deployment %s was not deleted: %s",
            record.run_id,
            reference.deployment,
            exc.message,
            extra={"run_id": record.run_id},
        )
