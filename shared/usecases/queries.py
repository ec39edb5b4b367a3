"""Reading runs and endpoints: what the HTTP API and the dashboard show."""

from __future__ import annotations

from shared.adapters.ledger import RunListing
from shared.api.http import EndpointView
from shared.context import AppContext
from shared.domain.errors import InvalidInput
from shared.domain.lines import check_line_name
from shared.domain.runs import (
    RUN_ID_PATTERN,
    RunRecord,
    RunState,
)


def get_run(ctx: AppContext, run_id: str) -> RunRecord:
    if not RUN_ID_PATTERN.match(run_id):
        raise InvalidInput(f"{run_id!r} is not a run id (ft- and 12 hex digits)")
    return ctx.ledger.get(run_id)


def list_runs(ctx: AppContext, *, state: str | None = None, line: str | None = None, limit: int = 100) -> RunListing:
    """The runs, newest first, and the records that could not be read (named, never raised)."""
    if state is not None and state not in RunState.__members__.values():
        raise InvalidInput(f"unknown state {state!r}; one of: {', '.join(RunState)}")
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    if line is not None:
        check_line_name(line)
    return ctx.ledger.listing(states={RunState(state)} if state else None, line=line, limit=limit)


def list_endpoints(ctx: AppContext) -> list[EndpointView]:
    """Every endpoint the engine has, as the API shows it (traffic, requests, idle minutes; never a key)."""
    now = ctx.now()
    return [EndpointView.of(endpoint, now) for endpoint in ctx.engine.list_endpoints()]
