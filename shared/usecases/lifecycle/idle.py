"""The idle sweep's teardown: managed endpoints without requests for IDLE_MINUTES are deleted, keeping what a
restore needs; an endpoint being deployed to is never idle.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.context import AppContext
from shared.domain.idle import entered, idle_minutes, last_activity
from shared.domain.naming import endpoint_name_for
from shared.domain.runs import (
    RunState,
    advance_from,
)

logger = logging.getLogger(__name__)


def teardown_idle_endpoints(ctx: AppContext) -> list[str]:
    """Delete managed endpoints idle for IDLE_MINUTES (and past the grace period after creation). Their runs become
    torn_down, keeping the model and endpoint name that restore_endpoint needs. Untagged endpoints are never touched.

    Idle counts from the last request or the last deployment to the endpoint, whichever is later: Azure Monitor
    takes minutes to show the smoke test's request, so an endpoint that just got a new model must not read as
    idle since its creation."""
    now = ctx.now()
    idle_for = timedelta(minutes=ctx.settings.idle_minutes)
    grace = timedelta(minutes=ctx.settings.idle_grace_minutes)
    torn_down = []
    busy = _endpoints_being_deployed(ctx)
    deployed = ctx.ledger.list(state=RunState.DEPLOYED, limit=1000)
    for endpoint in ctx.engine.list_endpoints():
        if not endpoint.is_managed or endpoint.name in busy:
            continue
        serving = [record for record in deployed if record.endpoint and record.endpoint.name == endpoint.name]
        deployed_at = [entered(record, RunState.DEPLOYED) for record in serving]
        last_use = last_activity(endpoint.created_at, endpoint.last_request_at, deployed_at)
        minutes = idle_minutes(
            now=now, created_at=endpoint.created_at, last_use=last_use, idle_for=idle_for, grace=grace
        )
        if minutes is None:
            continue
        ctx.engine.delete_endpoint(endpoint.name)
        reason = f"endpoint {endpoint.name} idle for {minutes:.1f} min: torn down; the model is kept for restore"
        for record in serving:
            ctx.ledger.transition(record.run_id, advance_from(RunState.DEPLOYED, RunState.TORN_DOWN, reason, now))
        logger.info("%s", reason)
        torn_down.append(endpoint.name)
    return torn_down


def _endpoints_being_deployed(ctx: AppContext) -> set[str]:
    """Endpoints a run is deploying to right now: never idle, whatever their request count says."""
    busy = set()
    for state in (RunState.REGISTERED, RunState.DEPLOYING):
        for record in ctx.ledger.list(state=state, limit=1000):
            if record.endpoint is not None:
                busy.add(record.endpoint.name)
            elif record.model is not None:
                busy.add(endpoint_name_for(record.model.name, ctx.profile.endpoint_scope))
    return busy
