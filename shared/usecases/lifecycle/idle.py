"""The idle sweep's teardown: managed endpoints without requests for IDLE_MINUTES are deleted, keeping what a
restore needs; an endpoint being deployed to is never idle.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.adapters.leases import EndpointBusy
from shared.context import AppContext
from shared.domain.errors import AutopilotError
from shared.domain.idle import entered, idle_minutes, last_activity
from shared.domain.runs import (
    RunRecord,
    RunState,
    advance_from,
)
from shared.usecases.lifecycle.steps import deploying_to
from shared.usecases.lines import line_config

logger = logging.getLogger(__name__)


def teardown_idle_endpoints(ctx: AppContext) -> list[str]:
    """Delete managed endpoints idle for IDLE_MINUTES (and past the grace period after creation). Their runs become
    torn_down, keeping the model and endpoint name that restore_endpoint needs. Untagged endpoints are never touched.

    Idle counts from the last request or the last deployment to the endpoint, whichever is later: Azure Monitor
    takes minutes to show the smoke test's request, so an endpoint that just got a new model must not read as
    idle since its creation."""
    now = ctx.now()
    grace = timedelta(minutes=ctx.settings.idle_grace_minutes)
    torn_down = []
    busy = _endpoints_being_deployed(ctx)
    deployed = ctx.ledger.list(states={RunState.DEPLOYED}, limit=1000)
    for endpoint in ctx.engine.list_endpoints():
        if not endpoint.is_managed or endpoint.name in busy:
            continue
        serving = [record for record in deployed if record.endpoint and record.endpoint.name == endpoint.name]
        idle_for = timedelta(minutes=_idle_minutes_of(ctx, serving))
        deployed_at = [entered(record, RunState.DEPLOYED) for record in serving]
        last_use = last_activity(endpoint.created_at, endpoint.last_request_at, deployed_at)
        minutes = idle_minutes(
            now=now, created_at=endpoint.created_at, last_use=last_use, idle_for=idle_for, grace=grace
        )
        if minutes is None:
            continue
        reason = f"endpoint {endpoint.name} idle for {minutes:.1f} min: torn down; the model is kept for restore"
        if _tear_down(ctx, endpoint.name, [record.run_id for record in serving], reason):
            torn_down.append(endpoint.name)
    return torn_down


def _idle_minutes_of(ctx: AppContext, serving: list[RunRecord]) -> float:
    """The idle_minutes of the endpoint's line (an endpoint serves one line) as its line.json says now; the setting
    when there is no serving run, or the line's config cannot be read."""
    if not serving:
        return ctx.settings.idle_minutes
    try:
        return line_config(ctx, serving[0].line).idle_minutes
    except AutopilotError as exc:
        logger.warning("line %s: %s; IDLE_MINUTES applies", serving[0].line, exc.message)
        return ctx.settings.idle_minutes


def _tear_down(ctx: AppContext, endpoint_name: str, serving: list[str], reason: str) -> bool:
    """Delete the endpoint under its lease, without waiting for it: an endpoint that another run is changing is in
    use, and a run that began deploying to it since the listing above keeps it."""
    try:
        with ctx.changing_endpoint(endpoint_name, wait_s=0):
            if endpoint_name in _endpoints_being_deployed(ctx):
                logger.info("endpoint %s: a run began deploying to it; not torn down", endpoint_name)
                return False
            ctx.engine.delete_endpoint(endpoint_name)
            now = ctx.now()
            for run_id in serving:
                ctx.ledger.transition(run_id, advance_from(RunState.DEPLOYED, RunState.TORN_DOWN, reason, now))
    except EndpointBusy:
        logger.info("endpoint %s is being changed by a run: not idle, not torn down this time", endpoint_name)
        return False
    logger.info("%s", reason)
    return True


def _endpoints_being_deployed(ctx: AppContext) -> set[str]:
    """Endpoints a run is deploying to right now: never idle, whatever their request count says."""
    in_flight = ctx.ledger.list(states={RunState.REGISTERED, RunState.DEPLOYING}, limit=10_000)
    return {name for record in in_flight if (name := deploying_to(ctx, record))}
