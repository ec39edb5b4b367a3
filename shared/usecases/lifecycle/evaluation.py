"""The evaluation of a deployed challenger, at 0% traffic, before any traffic moves: held-out conversations and the
forgetting probes, answered greedily through the scoring contract by the challenger's deployment and by the
champion's (or, for a line without one, by the base model, where the engine serves it), each pinned by name.

The answers are scored with azure-ai-evaluation (shared/adapters/text_metrics.py), flagged when degenerate, and
judged by the evidence gate (shared/domain/evaluation/decision.py). The evidence goes to `evaluation.json` and
`evaluation.md` under the run's prepared prefix; the summary goes on the run. A redelivery finds the summary on the
run and does not evaluate again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson

from shared.adapters.text_metrics import text_scores
from shared.context import AppContext
from shared.domain.evaluation.decision import EvidencePolicy, evidence_checks
from shared.domain.evaluation.degeneration import DegenerationPolicy, degeneration_flags
from shared.domain.evaluation.evidence import (
    Answer,
    Baseline,
    Evaluation,
    EvaluationSummary,
    ExampleEvidence,
    ModelSummary,
    ProbeEvidence,
)
from shared.domain.evaluation.heldout import HeldOutExample, held_out_examples, summarize
from shared.domain.evaluation.markdown import render_evaluation
from shared.domain.evaluation.probes import Probe, load_probes, probe_messages, probe_passes
from shared.domain.runs import RunRecord, RunState
from shared.usecases.lifecycle.answers import Answerer, ReferenceDeployment, reference_deployment, retire_reference
from shared.usecases.lifecycle.judging import judge_answers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompts:
    examples: list[HeldOutExample]
    probes: tuple[Probe, ...]

    @property
    def conversations(self) -> list[list[dict[str, str]]]:
        return [e.prompt for e in self.examples] + [probe_messages(p) for p in self.probes]


def evaluate_challenger(ctx: AppContext, record: RunRecord) -> EvaluationSummary:
    """The run's evaluation (the one on the record when a delivery made it already)."""
    ref = record.endpoint
    assert ref is not None  # set on the transition to deploying
    if record.evaluation is not None and record.evaluation.deployment == ref.deployment:
        return record.evaluation
    started = time.monotonic()
    settings = ctx.settings
    prompts = Prompts(
        held_out_examples(_test_rows(ctx, record), settings.eval_max_examples),
        load_probes() if settings.eval_probes else (),
    )
    logger.info(
        "run %s: evaluating deployment %s on %d held-out conversations and %d probes",
        record.run_id,
        ref.deployment,
        len(prompts.examples),
        len(prompts.probes),
        extra={"run_id": record.run_id},
    )
    answerer = Answerer(ctx, record)
    challenger = answerer.answer_all(ref.deployment, prompts.conversations, side="challenger")
    assert challenger is not None  # the challenger's side raises instead
    reference = reference_deployment(ctx, record)
    try:
        theirs = (
            answerer.answer_all(reference.deployment, prompts.conversations, side=str(reference.baseline), soft=True)
            if reference.deployment
            else None
        )
    finally:
        retire_reference(ctx, record, reference)
    notes = list(reference.notes)
    if reference.deployment and theirs is None:
        notes.append(f"the {reference.baseline}'s deployment {reference.deployment} did not answer: not compared")
        reference = ReferenceDeployment(Baseline.NONE)
    evaluation = _evidence(ctx, record, prompts, challenger, theirs, reference, notes, time.monotonic() - started)
    _write(ctx, record, evaluation)
    summary = evaluation.summary
    logger.info(
        "run %s: evaluation %s in %.1f s: %s",
        record.run_id,
        "passed" if summary.passed else "refused",
        summary.seconds,
        "; ".join(check.reason for check in summary.checks),
        extra={"run_id": record.run_id},
    )
    return summary


def _evidence(
    ctx: AppContext,
    record: RunRecord,
    prompts: Prompts,
    ours: list[tuple[str, str | None]],
    theirs: list[tuple[str, str | None]] | None,
    reference: ReferenceDeployment,
    notes: list[str],
    seconds: float,
) -> Evaluation:
    settings, ref, examples = ctx.settings, record.endpoint, prompts.examples
    assert ref is not None and record.model is not None  # set on the transitions to deploying and registered
    degeneration = DegenerationPolicy(repetition_threshold=settings.eval_repetition_threshold)

    def answer(text: str, finish: str | None, reference_text: str | None) -> Answer:
        flags = degeneration_flags(
            text, max_new_tokens=settings.eval_max_new_tokens, finish_reason=finish, policy=degeneration
        )
        scores = text_scores(text, reference_text) if reference_text is not None else {}
        return Answer(text=text, scores=scores, flags=[str(flag) for flag in flags], finish_reason=finish)

    count = len(examples)
    mine = [answer(*ours[i], examples[i].reference) for i in range(count)]
    others = [answer(*theirs[i], examples[i].reference) for i in range(count)] if theirs else None
    judge_model = judge_answers(ctx, record, examples, mine, others, notes)
    if judge_model is not None:
        mine, others = judge_model.challenger, judge_model.reference
    probe_rows = _probe_evidence(prompts.probes, ours[count:], theirs[count:] if theirs else None)
    challenger = summarize(
        ref.deployment,
        f"{record.model.name}:{record.model.version}",
        mine,
        probes_passed=sum(p.challenger_passed for p in probe_rows),
        probes=len(probe_rows),
        eval_loss=record.metrics.eval_loss if record.metrics else None,
    )
    compared: ModelSummary | None = None
    if others is not None and reference.deployment and reference.model:
        compared = summarize(
            reference.deployment,
            reference.model,
            others,
            probes_passed=sum(bool(p.baseline_passed) for p in probe_rows),
            probes=len(probe_rows),
            eval_loss=_reference_loss(record, reference),
        )
    if not examples:
        notes.append("the test split has no conversation to evaluate: only the probes and the loss were compared")
    if compared is None:
        notes.append(
            "nothing to compare with (no champion deployment, and this engine does not serve base models): "
            "gated on the degeneration checks and the loss alone"
        )
    policy = evidence_policy(ctx, record)
    summary = EvaluationSummary(
        evaluated_at=ctx.now(),
        deployment=ref.deployment,
        baseline=reference.baseline if compared is not None else Baseline.NONE,
        primary_metric=policy.primary_metric,
        examples=count,
        challenger=challenger,
        reference=compared,
        checks=evidence_checks(
            challenger, compared, reference.baseline, policy, champion_is_newer=reference.champion_is_newer
        ),
        notes=notes,
        seconds=round(seconds, 1),
        judge_model=judge_model.deployment if judge_model else None,
    )
    evidence = [
        ExampleEvidence(
            index=e.index,
            prompt=e.prompt,
            reference=e.reference,
            challenger=mine[i],
            baseline=others[i] if others else None,
        )
        for i, e in enumerate(examples)
    ]
    return Evaluation(
        run_id=record.run_id,
        summary=summary,
        thresholds=_thresholds(policy, degeneration),
        examples=evidence,
        probes=probe_rows,
    )


def evidence_policy(ctx: AppContext, record: RunRecord) -> EvidencePolicy:
    """The line's thresholds (recorded on the run when it was taken in), else the settings'."""
    settings, config = ctx.settings, record.line_config
    return EvidencePolicy(
        primary_metric=settings.eval_primary_metric,
        score_tolerance=config.gate_score_tolerance if config else settings.gate_score_tolerance,
        max_degenerate_rate=config.gate_max_degenerate_rate if config else settings.gate_max_degenerate_rate,
        max_forgetting_drop=config.gate_max_forgetting_drop if config else settings.gate_max_forgetting_drop,
        judge_gates=settings.eval_judge_gates,
        judge_tolerance=settings.gate_judge_tolerance,
    )


def _thresholds(policy: EvidencePolicy, degeneration: DegenerationPolicy) -> dict[str, float | bool | str]:
    return {
        "primary_metric": policy.primary_metric,
        "score_tolerance": policy.score_tolerance,
        "max_degenerate_rate": policy.max_degenerate_rate,
        "max_forgetting_drop": policy.max_forgetting_drop,
        "repetition_threshold": degeneration.repetition_threshold,
        "judge_gates": policy.judge_gates,
    }


def _probe_evidence(
    probes: tuple[Probe, ...], ours: list[tuple[str, str | None]], theirs: list[tuple[str, str | None]] | None
) -> list[ProbeEvidence]:
    rows = []
    for i, probe in enumerate(probes):
        other = theirs[i][0] if theirs else None
        rows.append(
            ProbeEvidence(
                probe_id=probe.id,
                category=probe.category,
                prompt=probe.prompt,
                challenger=ours[i][0],
                challenger_passed=probe_passes(probe, ours[i][0]),
                baseline=other,
                baseline_passed=probe_passes(probe, other) if other is not None else None,
            )
        )
    return rows


def _reference_loss(record: RunRecord, reference: ReferenceDeployment) -> float | None:
    metrics = record.metrics
    if metrics is None:
        return None
    if reference.baseline == Baseline.BASE:
        return metrics.base_eval_loss
    return metrics.champion_eval_loss if metrics.champion and metrics.champion == reference.model else None


def _test_rows(ctx: AppContext, record: RunRecord) -> list[dict]:
    test = record.artifacts.test
    if test is None:
        return []
    container, _, name = test.partition("/")
    return [orjson.loads(line) for line in ctx.store.iter_lines(container, name) if line.strip()]


def _write(ctx: AppContext, record: RunRecord, evaluation: Evaluation) -> None:
    container = record.dataset.container
    prefix = f"{ctx.settings.prepared_prefix}{record.run_id}/"
    document = orjson.dumps(evaluation.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    ctx.store.write(container, f"{prefix}evaluation.json", document, content_type="application/json")
    page = render_evaluation(evaluation).encode()
    ctx.store.write(container, f"{prefix}evaluation.md", page, content_type="text/markdown; charset=utf-8")
    artifacts = record.artifacts.model_copy(
        update={
            "evaluation_json": f"{container}/{prefix}evaluation.json",
            "evaluation_md": f"{container}/{prefix}evaluation.md",
        }
    )

    def keep(current: RunRecord) -> RunRecord | None:
        if current.state != RunState.DEPLOYING:
            return None  # a duplicate delivery ended the run meanwhile
        return current.model_copy(update={"evaluation": evaluation.summary, "artifacts": artifacts})

    ctx.ledger.update(record.run_id, keep)
