"""The timer's use case: reconcile runs whose events were lost, then tear down idle endpoints."""

from __future__ import annotations

from dataclasses import dataclass

from shared.context import AppContext
from shared.usecases.lifecycle.idle import teardown_idle_endpoints
from shared.usecases.lifecycle.jobs import reconcile_runs


@dataclass(frozen=True)
class SweepOutcome:
    reconciled: list[str]  # "run_id: state" (or an error code) for each run the sweep moved on
    torn_down: list[str]  # endpoint names


def sweep(ctx: AppContext) -> SweepOutcome:
    """Reconciling first: a run it finishes deploying must count as a deployment before the idle check."""
    return SweepOutcome(reconciled=reconcile_runs(ctx), torn_down=teardown_idle_endpoints(ctx))
