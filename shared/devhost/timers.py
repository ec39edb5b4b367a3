"""Timer triggers: NCRONTAB schedules (shared.devhost.ncrontab) in UTC, runOnStartup, past-due and one catch-up run."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from azure.functions.timer import TimerRequest

from shared.devhost import ncrontab
from shared.devhost.indexing import HostedFunction
from shared.devhost.invocation import invoke
from shared.domain.clock import utc_now

logger = logging.getLogger(__name__)

PAST_DUE_GRACE = timedelta(seconds=1)


def invoke_timer(function: HostedFunction, *, past_due: bool = False, status: dict[str, str] | None = None) -> Any:
    return invoke(function, TimerRequest(past_due=past_due, schedule_status=status or {}))


def run_timer(function: HostedFunction, stopping: threading.Event) -> None:
    """Run `function` on its schedule until `stopping` is set; a failing run is logged and the schedule goes on."""
    schedule = ncrontab.parse(str(function.trigger["schedule"]))
    last: datetime | None = None
    if function.trigger.get("runOnStartup"):
        last = utc_now()
        _tick(function, past_due=False, last=None, following=ncrontab.next_occurrence(schedule, last))
    scheduled = ncrontab.next_occurrence(schedule, utc_now())
    catching_up = False
    while not stopping.wait(max(0.0, (scheduled - utc_now()).total_seconds())):
        following = ncrontab.next_occurrence(schedule, scheduled)
        late = catching_up or utc_now() - scheduled > PAST_DUE_GRACE
        _tick(function, past_due=late, last=last, following=following)
        last, now = scheduled, utc_now()
        # A run that outlasted the next occurrence gets one catch-up run (past due), then the schedule resumes.
        catching_up = following <= now
        scheduled = now if catching_up else following


def _tick(function: HostedFunction, *, past_due: bool, last: datetime | None, following: datetime) -> None:
    status = {
        "Last": last.isoformat() if last else "",
        "Next": following.isoformat(),
        "LastUpdated": utc_now().isoformat(),
    }
    try:
        invoke_timer(function, past_due=past_due, status=status)
    except Exception:
        logger.exception("timer function %s failed", function.name)
