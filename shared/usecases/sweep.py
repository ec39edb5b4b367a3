"""The timer's use case: reconcile runs whose events were lost, then tear down idle endpoints."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.context import AppContext
from shared.usecases.lifecycle.idle import teardown_idle_endpoints
from shared.usecases.lifecycle.jobs import ACTIVE_STATES, reconcile_runs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOutcome:
    reconciled: list[str]  # "run_id: state" (or an error code) for each run the sweep moved on
    torn_down: list[str]  # endpoint names
    unreadable: list[str]  # run ids whose records do not parse: skipped, logged once per tick


def sweep(ctx: AppContext) -> SweepOutcome:
    """Reconciling first: a run it finishes deploying must count as a deployment before the idle check.

    A damaged record is skipped by every step (the ledger's listings leave it out), so the other runs are
    reconciled and idle endpoints torn down all the same; a damaged active one is named here, once a tick, until it
    is repaired. The sweep reads the active runs only (the ledger's index), never the whole history."""
    ctx.ledger.ensure_index()  # once, for records from before the index
    active = ctx.ledger.listing(states=ACTIVE_STATES, limit=10_000)
    for damaged in active.unreadable:
        logger.error("sweep skips run %s: %s", damaged.run_id, damaged.error, extra={"run_id": damaged.run_id})
    return SweepOutcome(
        reconciled=reconcile_runs(ctx, active.records),
        torn_down=teardown_idle_endpoints(ctx),
        unreadable=[damaged.run_id for damaged in active.unreadable],
    )
