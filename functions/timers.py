"""Timer: reconcile runs whose events were lost, then tear down idle endpoints."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.context import get_context
from shared.usecases.sweep import sweep

logger = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("sweep_idle_endpoints")
@bp.timer_trigger(arg_name="timer", schedule="%IDLE_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep_idle_endpoints(timer: func.TimerRequest) -> None:
    outcome = sweep(get_context())
    logger.info(
        "sweep_idle_endpoints%s: reconciled %s; torn down %s; unreadable records %s",
        " (past due)" if timer.past_due else "",
        outcome.reconciled or "nothing",
        outcome.torn_down or "nothing",
        outcome.unreadable or "none",
    )
