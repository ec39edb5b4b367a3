"""Timer: reconcile runs whose events were lost, then tear down idle endpoints."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.context import get_context
from shared.lifecycle import reconcile_runs, teardown_idle_endpoints

logger = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("sweep_idle_endpoints")
@bp.timer_trigger(arg_name="timer", schedule="%IDLE_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep_idle_endpoints(timer: func.TimerRequest) -> None:
    context = get_context()
    reconciled = reconcile_runs(context)
    torn_down = teardown_idle_endpoints(context)
    logger.info("sweep_idle_endpoints%s: reconciled %s; torn down %s", " (past due)" if timer.past_due else "",
                reconciled or "nothing", torn_down or "nothing")
