"""Repairing a run record that does not parse: show what is stored, and put the kept copy back."""

from __future__ import annotations

from shared.adapters.ledger import DamagedRecord
from shared.context import AppContext
from shared.domain.errors import InvalidInput, InvalidTransition
from shared.domain.runs import RUN_ID_PATTERN, RunRecord


def inspect_record(ctx: AppContext, run_id: str) -> DamagedRecord:
    if not RUN_ID_PATTERN.match(run_id):
        raise InvalidInput(f"{run_id!r} is not a run id (ft- and 12 hex digits)")
    return ctx.ledger.inspect(run_id)


def restore_record(ctx: AppContext, run_id: str) -> RunRecord:
    """The kept copy written back, only over a record that does not parse (a readable one is never replaced)."""
    damaged = inspect_record(ctx, run_id)
    if damaged.error is None:
        raise InvalidTransition(f"run {run_id}: its record parses; there is nothing to repair", code="record_readable")
    return ctx.ledger.restore_kept(damaged)
