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


@dataclass(frozen=True)
class ChampionCheck:
    holds: bool
    reason: str


def against_champion(
    eval_loss: float, policy: GatePolicy, *, champion: str, champion_eval_loss: float, champion_is_newer: bool
) -> ChampionCheck:
    """Does the challenger hold up against the champion? Within GATE_CHAMPION_TOLERANCE, when the champion comes from
    an older upload; when it comes from a newer one, only by beating it: newer data wins unless the older run is
    better (a late run whose completion was delayed must not displace a newer champion on a tie)."""
    if champion_is_newer:
        beats = eval_loss < champion_eval_loss
        return ChampionCheck(
            beats,
            f"eval loss {eval_loss:.4f} {'<' if beats else '>='} {champion_eval_loss:.4f} "
            f"(champion {champion} is from a newer upload: an older run must beat it)",
        )
    allowed = champion_eval_loss * (1 + policy.champion_tolerance)
    holds_up = eval_loss <= allowed
    return ChampionCheck(
        holds_up,
        f"eval loss {eval_loss:.4f} {'<=' if holds_up else '>'} {allowed:.4f} "
        f"(champion {champion} {champion_eval_loss:.4f} plus {policy.champion_tolerance:.0%})",
    )


def quality_gate(
    metrics: RunMetrics,
    policy: GatePolicy,
    *,
    champion: str | None = None,
    champion_is_newer: bool = False,
) -> GateResult:
    """Before registration, on the losses: better than the base model, and not worse than the champion where the
    job evaluated it on the same test split (`metrics.champion` is `champion`). A champion's loss on another split
    says nothing about this one: without the same-split loss, the evaluation after deployment compares them."""
    champion_eval_loss = metrics.champion_eval_loss if champion and metrics.champion == champion else None
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
        check = against_champion(
            metrics.eval_loss,
            policy,
            champion=champion or "?",
            champion_eval_loss=champion_eval_loss,
            champion_is_newer=champion_is_newer,
        )
        passed &= check.holds
        reasons.append(check.reason + " on the same test split")
    elif champion:
        reasons.append(
            f"champion {champion}: no loss on this test split from the engine (the evaluation compares them)"
        )
    else:
        reasons.append("no champion yet")
    return GateResult(passed=passed, reasons=reasons, champion=champion, champion_eval_loss=champion_eval_loss)
