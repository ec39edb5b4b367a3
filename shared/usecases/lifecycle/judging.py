"""The optional AI-assisted judge over an evaluation's answers (AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_DEPLOYMENT):
azure-ai-evaluation's similarity, coherence and fluency, added to each answer's evidence."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.adapters.judge import AiJudge, JudgeConfig, JudgeScores
from shared.context import AppContext
from shared.domain.evaluation.evidence import Answer
from shared.domain.evaluation.heldout import HeldOutExample
from shared.domain.runs import RunRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgedAnswers:
    deployment: str  # the Azure OpenAI deployment that judged
    challenger: list[Answer]
    reference: list[Answer] | None


def judge_answers(
    ctx: AppContext,
    record: RunRecord,
    examples: list[HeldOutExample],
    challenger: list[Answer],
    reference: list[Answer] | None,
    notes: list[str],
) -> JudgedAnswers | None:
    """Both sides' answers with their judge scores; None when no judge is configured. A judge that fails is noted
    (its metrics stay empty): it adds evidence, it never blocks the evaluation."""
    settings = ctx.settings
    if not (settings.azure_openai_endpoint and settings.azure_openai_deployment) or not examples:
        return None
    key = settings.azure_openai_api_key
    judge = AiJudge(
        JudgeConfig(
            endpoint=settings.azure_openai_endpoint,
            deployment=settings.azure_openai_deployment,
            api_version=settings.azure_openai_api_version,
            api_key=key.get_secret_value() if key else None,
        )
    )
    logger.info(
        "run %s evaluation: the AI judge %s scores %d answers",
        record.run_id,
        settings.azure_openai_deployment,
        len(challenger) + len(reference or []),
        extra={"run_id": record.run_id},
    )

    def judged(answers: list[Answer]) -> list[Answer]:
        items = [(e.prompt[-1]["content"], a.text, e.reference) for e, a in zip(examples, answers, strict=True)]
        scores = judge.score_many(items)
        errors = [s.error for s in scores if s.error]
        if errors:
            notes.append(f"the AI judge failed on {len(errors)} of {len(items)} answers; the first: {errors[0]}")
        return [a.model_copy(update={"judge": _values(s)}) for a, s in zip(answers, scores, strict=True)]

    return JudgedAnswers(
        deployment=settings.azure_openai_deployment,
        challenger=judged(challenger),
        reference=judged(reference) if reference is not None else None,
    )


def _values(scores: JudgeScores) -> dict[str, float | None]:
    return {"similarity": scores.similarity, "coherence": scores.coherence, "fluency": scores.fluency}
