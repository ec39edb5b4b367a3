"""The quality gate: may a freshly trained model replace what is serving? Pure."""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.runs import GateResult, RunMetrics


@dataclass(frozen=True)
class GatePolicy:
    min_improvement: float = 0.02  # eval loss must be at least 2% below the base model's
    champion_tolerance: float = 0.05  # and at most 5% above the current champion's
    # Azure ML's pipeline does not evaluate the base model; without this, such runs pass on the champion check alone
    require_base_eval: bool = True


def quality_gate(
    metrics: RunMetrics, policy: GatePolicy, *, champion: str | None = None, champion_eval_loss: float | None = None
) -> GateResult:
    reasons: list[str] = []
    passed = True
    if metrics.eval_loss is None:
        return GateResult(
            passed=False,
            reasons=["the job reported no eval loss"],
            champion=champion,
            champion_eval_loss=champion_eval_loss,
        )
    if metrics.base_eval_loss is None:
        if policy.require_base_eval:
            passed = False
            reasons.append(
                "the job reported no base-model eval loss to compare with (GATE_REQUIRE_BASE_EVAL=false gates on "
                "the champion alone)"
            )
        else:
            reasons.append("no base-model eval loss reported: improvement over the base not checked")
    else:
        needed = metrics.base_eval_loss * (1 - policy.min_improvement)
        beats_base = metrics.eval_loss <= needed
        passed &= beats_base
        reasons.append(
            f"eval loss {metrics.eval_loss:.4f} {'<=' if beats_base else '>'} {needed:.4f} "
            f"(base {metrics.base_eval_loss:.4f} less {policy.min_improvement:.0%})"
        )
    if champion_eval_loss is not None:
        allowed = champion_eval_loss * (1 + policy.champion_tolerance)
        holds_up = metrics.eval_loss <= allowed
        passed &= holds_up
        reasons.append(
            f"eval loss {metrics.eval_loss:.4f} {'<=' if holds_up else '>'} {allowed:.4f} "
            f"(champion {champion} {champion_eval_loss:.4f} plus {policy.champion_tolerance:.0%})"
        )
    else:
        reasons.append("no champion yet")
    return GateResult(passed=passed, reasons=reasons, champion=champion, champion_eval_loss=champion_eval_loss)
