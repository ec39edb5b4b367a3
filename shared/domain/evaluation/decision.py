"""The evidence gate: may a deployed challenger take the traffic? Pure: figures in, checks out.

Each rule is one `Check` with a stable code, so a refusal names what failed and by how much:
- `degenerate_answers`: the share of the challenger's answers flagged (empty, no stop, repetition, template leak)
  is at most `max_degenerate_rate`;
- `score_below_baseline`: its primary score is within `score_tolerance` of the champion's (or the base model's),
  or better; against a champion from a newer upload it must be better (newer data wins ties);
- `forgetting`: its pass rate on the general-ability probes drops by at most `max_forgetting_drop`;
- `judge_below_baseline` (only when the judge gates): its AI-assisted similarity is within `judge_tolerance`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.evaluation.evidence import Baseline, Check, ModelSummary

DEGENERATE = "degenerate_answers"
SCORE = "score_below_baseline"
FORGETTING = "forgetting"
JUDGE = "judge_below_baseline"
JUDGE_GATE_METRIC = "similarity"


@dataclass(frozen=True)
class EvidencePolicy:
    primary_metric: str = "rouge_l"
    score_tolerance: float = 0.02  # absolute, on the metric's 0..1 scale
    max_degenerate_rate: float = 0.2
    max_forgetting_drop: float = 0.1  # absolute, on the probes' pass rate
    judge_gates: bool = False
    judge_tolerance: float = 0.25  # absolute, on the judge's 1..5 scale


def evidence_checks(
    challenger: ModelSummary,
    reference: ModelSummary | None,
    baseline: Baseline,
    policy: EvidencePolicy,
    *,
    champion_is_newer: bool = False,
) -> list[Check]:
    checks = [degenerate_check(challenger, policy)]
    if reference is None:
        return checks
    label = f"{baseline} {reference.model}"
    checks.append(score_check(challenger, reference, label, policy, champion_is_newer=champion_is_newer))
    forgetting = forgetting_check(challenger, reference, label, policy)
    if forgetting is not None:
        checks.append(forgetting)
    if policy.judge_gates:
        judged = judge_check(challenger, reference, label, policy)
        if judged is not None:
            checks.append(judged)
    return checks


def degenerate_check(challenger: ModelSummary, policy: EvidencePolicy) -> Check:
    rate = challenger.degenerate_rate
    holds = rate <= policy.max_degenerate_rate
    counts = ", ".join(f"{flag} {n}" for flag, n in sorted(challenger.flag_counts.items()) if n)
    return Check(
        code=DEGENERATE,
        passed=holds,
        reason=(
            f"degenerate answers {challenger.degenerate} of {challenger.answers} ({rate:.0%})"
            + (f": {counts}" if counts else "")
            + f"; {'at most' if holds else 'over'} {policy.max_degenerate_rate:.0%} allowed"
        ),
    )


def score_check(
    challenger: ModelSummary,
    reference: ModelSummary,
    label: str,
    policy: EvidencePolicy,
    *,
    champion_is_newer: bool,
) -> Check:
    metric = policy.primary_metric
    ours, theirs = challenger.scores.get(metric, 0.0), reference.scores.get(metric, 0.0)
    if champion_is_newer:
        holds = ours > theirs
        reason = (
            f"{metric} {ours:.4f} {'>' if holds else '<='} {theirs:.4f} of {label}, which is from a newer upload: "
            "an older run must beat it"
        )
    else:
        needed = max(theirs - policy.score_tolerance, 0.0)
        holds = ours >= needed
        reason = (
            f"{metric} {ours:.4f} {'>=' if holds else '<'} {needed:.4f} ({label} {theirs:.4f} "
            f"less {policy.score_tolerance:g})"
        )
    return Check(code=SCORE, passed=holds, reason=reason)


def forgetting_check(
    challenger: ModelSummary, reference: ModelSummary, label: str, policy: EvidencePolicy
) -> Check | None:
    ours, theirs = challenger.probe_pass_rate, reference.probe_pass_rate
    if ours is None or theirs is None:
        return None
    drop = theirs - ours
    holds = drop <= policy.max_forgetting_drop + 1e-9
    return Check(
        code=FORGETTING,
        passed=holds,
        reason=(
            f"probes passed {challenger.probes_passed}/{challenger.probes} ({ours:.0%}) against "
            f"{reference.probes_passed}/{reference.probes} ({theirs:.0%}) for {label}: a drop of {max(drop, 0):.0%}, "
            f"{'at most' if holds else 'over'} {policy.max_forgetting_drop:.0%} allowed"
        ),
    )


def judge_check(challenger: ModelSummary, reference: ModelSummary, label: str, policy: EvidencePolicy) -> Check | None:
    ours, theirs = challenger.judge.get(JUDGE_GATE_METRIC), reference.judge.get(JUDGE_GATE_METRIC)
    if ours is None or theirs is None:
        return None
    needed = theirs - policy.judge_tolerance
    holds = ours >= needed
    return Check(
        code=JUDGE,
        passed=holds,
        reason=(
            f"AI-judged {JUDGE_GATE_METRIC} {ours:.2f} {'>=' if holds else '<'} {needed:.2f} "
            f"({label} {theirs:.2f} less {policy.judge_tolerance:g})"
        ),
    )


def refusal_code(checks: list[Check]) -> str:
    """The code a refused run's error carries: forgetting first (the issue the seed warns of), then the others."""
    failed = [check.code for check in checks if not check.passed]
    for code in (FORGETTING, DEGENERATE, SCORE, JUDGE):
        if code in failed:
            return code
    return failed[0] if failed else ""
