"""The traffic shift of a rollout, under the endpoint's lease: the last word on which run serves.

Runs that finish together on one endpoint take turns here. Each one, holding the lease, reads the ledger and the
champion as they are now, so:
- newer wins: a run whose champion changed while it deployed is compared with the new champion, and a run from an
  older upload never replaces a newer champion without beating it; one that does not is `superseded`;
- a shift never retires a deployment that belongs to a run still deploying: that run takes its own turn;
- a run whose deployment a shift retires is `superseded` too, naming the run that replaced it.
"""

from __future__ import annotations

import logging
from functools import partial

from shared.context import AppContext
from shared.domain.gate import ChampionCheck
from shared.domain.idle import entered
from shared.domain.naming import deployment_name_for
from shared.domain.runs import RunRecord, RunState, SmokeTestResult, advance_from
from shared.domain.tags import CHAMPION
from shared.domain.traffic import shifted_traffic, to_retire
from shared.engine.base import ModelRef
from shared.usecases.lifecycle.steps import attempt, champion_is_newer, deploying_to

logger = logging.getLogger(__name__)


def shift_traffic(ctx: AppContext, record: RunRecord, smoke_test: SmokeTestResult) -> RunRecord:
    """All traffic to the run's tested deployment and the champion alias to its model; or, when a newer champion
    came meanwhile and this run does not beat it, its deployment deleted and the run superseded."""
    ref = record.endpoint
    assert ref is not None  # set on the transition to deploying
    with ctx.changing_endpoint(ref.name):
        current = ctx.ledger.get(record.run_id)
        if current.state != RunState.DEPLOYING:
            return current  # a duplicate delivery shifted or rolled back meanwhile
        check = _against_current_champion(ctx, current)
        if check is not None and not check.holds:
            return _supersede_deploying(ctx, current, check.reason, smoke_test)
        return _shift(ctx, current, smoke_test, check)


def _shift(ctx: AppContext, record: RunRecord, smoke_test: SmokeTestResult, check: ChampionCheck | None) -> RunRecord:
    engine, run_id, ref, registered = ctx.engine, record.run_id, record.endpoint, record.model
    assert ref is not None and registered is not None  # set on the transitions to deploying and registered
    runs = ctx.ledger.list(states={RunState.DEPLOYED, RunState.REGISTERED, RunState.DEPLOYING}, limit=10_000)
    serving = [r for r in runs if r.state == RunState.DEPLOYED and r.endpoint and r.endpoint.name == ref.name]
    in_flight = {deployment_name_for(r.run_id) for r in runs if r.run_id != run_id and deploying_to(ctx, r) == ref.name}
    latest = max(serving, key=lambda r: entered(r, RunState.DEPLOYED) or r.updated_at, default=None)
    previous = latest.endpoint.deployment if latest and latest.endpoint else None
    traffic = shifted_traffic(ref.deployment, previous, ctx.settings.keep_previous_deployment)
    endpoint = attempt(ctx, record, "shift", "set_traffic", lambda: engine.set_traffic(ref.name, traffic))
    for name in to_retire(traffic, endpoint.traffic):
        if name in in_flight:
            logger.info("run %s: deployment %s is still deploying; left at 0%%", run_id, name, extra={"run_id": run_id})
            continue
        # one operation per deployment: deleting one must not clear the failures of deleting another
        attempt(
            ctx,
            record,
            "retire",
            f"delete_deployment {name}",
            partial(engine.delete_deployment, ref.name, name),
        )
    for replaced in serving:
        if replaced.endpoint and replaced.endpoint.deployment not in traffic:
            reason = f"replaced by run {run_id} on {ref.name}: deployment {replaced.endpoint.deployment} retired"
            ctx.ledger.transition(
                replaced.run_id, advance_from(RunState.DEPLOYED, RunState.SUPERSEDED, reason, ctx.now())
            )
    model = ModelRef(name=registered.name, version=registered.version)
    attempt(ctx, record, "promote", "set_model_alias", lambda: engine.set_model_alias(model, CHAMPION))
    contest = f"; {check.reason}" if check is not None else ""
    return ctx.ledger.transition(
        run_id,
        advance_from(
            RunState.DEPLOYING,
            RunState.DEPLOYED,
            f"smoke test passed in {smoke_test.seconds:.1f} s; 100% traffic on {ref.deployment}{contest}",
            ctx.now(),
            smoke_test=smoke_test,
            endpoint=ref.model_copy(update={"scoring_uri": endpoint.scoring_uri, "previous_deployment": previous}),
        ),
    )


def _against_current_champion(ctx: AppContext, record: RunRecord) -> ChampionCheck | None:
    """When another run was promoted while this one deployed, this run's evidence is against another model: a
    newer champion keeps its place (an older run would have to beat it, and was not compared with it); an older one
    gives way to this run, newer data that passed its own evaluation. None when the champion is the one compared."""
    registered, evaluation = record.model, record.evaluation
    if registered is None or record.gate is None:
        return None  # a restore: its model is the champion already
    champion = attempt(ctx, record, "shift", "get_model", lambda: ctx.engine.get_model(registered.name, alias=CHAMPION))
    if champion is None or champion.version == registered.version:
        return None
    name = f"{champion.name}:{champion.version}"
    compared = evaluation.reference.model if evaluation is not None and evaluation.reference is not None else None
    if name == compared:
        return None
    if champion_is_newer(ctx, record, champion):
        return ChampionCheck(
            False,
            f"champion {name} is from a newer upload and this run was evaluated against "
            f"{f'{evaluation.baseline} {compared}' if evaluation and compared else 'no model'}: an older run must "
            "beat it",
        )
    return ChampionCheck(True, f"champion {name} is from an older upload: newer data wins")


def _supersede_deploying(ctx: AppContext, record: RunRecord, reason: str, smoke_test: SmokeTestResult) -> RunRecord:
    ref = record.endpoint
    assert ref is not None  # set on the transition to deploying
    logger.info("run %s superseded: %s", record.run_id, reason, extra={"run_id": record.run_id})
    attempt(
        ctx,
        record,
        "supersede",
        "delete_deployment",
        lambda: ctx.engine.delete_deployment(ref.name, ref.deployment),
    )
    return ctx.ledger.transition(
        record.run_id,
        advance_from(
            RunState.DEPLOYING,
            RunState.SUPERSEDED,
            f"a newer champion was promoted while this run deployed: {reason}; deployment {ref.deployment} deleted",
            ctx.now(),
            smoke_test=smoke_test,
        ),
    )
