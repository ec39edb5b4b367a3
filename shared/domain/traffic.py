"""The traffic shift of a blue/green rollout, as values. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def shifted_traffic(new: str, previous: str | None, keep_previous: bool) -> dict[str, int]:
    """All traffic to the new deployment; the previous one kept at 0% when asked (KEEP_PREVIOUS_DEPLOYMENT)."""
    return {new: 100, **({previous: 0} if keep_previous and previous else {})}


def to_retire(traffic: Mapping[str, int], deployments: Iterable[str]) -> list[str]:
    """The deployments the shift leaves out: deleted once the weights are set."""
    return [name for name in deployments if name not in traffic]
