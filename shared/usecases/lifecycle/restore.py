"""Restoring a torn-down endpoint: re-created from the line's champion, smoke-tested, given all traffic."""

from __future__ import annotations

from shared.context import AppContext
from shared.domain.errors import InvalidInput, NotFound
from shared.domain.naming import deployment_name_for, is_resource_name
from shared.domain.runs import EndpointRef, ModelVersion, RunRecord, RunState, advance_from
from shared.domain.tags import CHAMPION, MANAGED_TAG
from shared.engine.base import ModelRef
from shared.usecases.lifecycle.rollout import smoke_test_and_shift
from shared.usecases.lifecycle.steps import attempt


def restore_endpoint(ctx: AppContext, endpoint_name: str) -> RunRecord:
    """Re-create a torn-down endpoint from its registered champion, smoke-test it and give it all traffic.

    The run moves to `deploying` before anything is created, so the idle sweep leaves the endpoint alone while it
    comes up; a restore interrupted by a transient error is picked up again by the next call."""
    if not is_resource_name(endpoint_name):
        raise InvalidInput(f"{endpoint_name!r} is not an endpoint name")
    candidates = [
        r
        for r in ctx.ledger.list(states={RunState.TORN_DOWN, RunState.DEPLOYING}, limit=10_000)
        if r.endpoint
        and r.endpoint.name == endpoint_name
        and (
            r.state == RunState.TORN_DOWN
            or (r.state == RunState.DEPLOYING and r.history[-1].from_state == RunState.TORN_DOWN)
        )
    ]
    if not candidates:
        raise NotFound(f"no torn-down endpoint named {endpoint_name}", code="endpoint_not_found")
    record = max(candidates, key=lambda r: r.updated_at)
    registered = record.model
    assert registered is not None  # set on the transition to registered, long before a teardown
    if record.state == RunState.TORN_DOWN:
        champion = ctx.engine.get_model(registered.name, alias=CHAMPION)
        model = champion or ModelRef(name=registered.name, version=registered.version)
        ref = EndpointRef(name=endpoint_name, deployment=deployment_name_for(record.run_id))
        record = ctx.ledger.transition(
            record.run_id,
            advance_from(
                RunState.TORN_DOWN,
                RunState.DEPLOYING,
                f"restore: {model.name} version {model.version} on {endpoint_name}",
                ctx.now(),
                endpoint=ref,
                model=ModelVersion(name=model.name, version=model.version),
            ),
        )
    with ctx.changing_endpoint(endpoint_name):
        _recreate(ctx, record, endpoint_name)
    return smoke_test_and_shift(ctx, ctx.ledger.get(record.run_id))


def _recreate(ctx: AppContext, record: RunRecord, endpoint_name: str) -> None:
    """The endpoint and the run's deployment at 0%, made again (both get-or-create); the scoring URI noted."""
    registered, deploying = record.model, record.endpoint
    assert registered is not None and deploying is not None  # the move to deploying set both
    model = ModelRef(name=registered.name, version=registered.version)
    endpoint = attempt(
        ctx,
        record,
        "restore",
        "create_endpoint",
        lambda: ctx.engine.create_or_update_endpoint(endpoint_name, {MANAGED_TAG: "true", "model": model.name}),
    )
    attempt(
        ctx,
        record,
        "restore",
        "create_deployment",
        lambda: ctx.engine.create_deployment(endpoint_name, deploying.deployment, model),
    )

    def with_scoring_uri(r: RunRecord) -> RunRecord | None:
        if r.state != RunState.DEPLOYING:
            return None
        assert r.endpoint is not None  # set on the transition to deploying
        return r.model_copy(update={"endpoint": r.endpoint.model_copy(update={"scoring_uri": endpoint.scoring_uri})})

    ctx.ledger.update(record.run_id, with_scoring_uri)
