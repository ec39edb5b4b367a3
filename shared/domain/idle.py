"""When an endpoint was last used or changed, and whether the idle sweep may tear it down. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from shared.domain.runs import RunRecord, RunState


def entered(record: RunRecord, state: RunState) -> datetime | None:
    """When the run last moved to `state` (a restore moves it to deploying and deployed again)."""
    moves = [t.at for t in record.history if t.to_state == state]
    return moves[-1] if moves else None


def last_activity(
    created_at: datetime | None, last_request_at: datetime | None, deployed_at: Iterable[datetime | None]
) -> datetime | None:
    """When the endpoint was last used or changed: its latest request, deployment or creation."""
    moments = [moment for moment in (created_at, last_request_at, *deployed_at) if moment is not None]
    return max(moments) if moments else None


def idle_minutes(
    *,
    now: datetime,
    created_at: datetime | None,
    last_use: datetime | None,
    idle_for: timedelta,
    grace: timedelta,
) -> float | None:
    """How long the endpoint has been idle, when that is long enough to tear it down; None otherwise (unknown
    creation or use, inside the grace period after creation, or used within the idle window)."""
    if created_at is None or last_use is None or now - created_at < grace or now - last_use < idle_for:
        return None
    return (now - last_use).total_seconds() / 60


def teardown_due(
    *, created_at: datetime | None, last_use: datetime | None, idle_for: timedelta, grace: timedelta
) -> datetime | None:
    """From when the idle sweep may tear the endpoint down (it does at its next run after that); None when unknown.
    The same rule as idle_minutes: idle for `idle_for` since the last use, and past the grace after creation."""
    if created_at is None or last_use is None:
        return None
    return max(last_use + idle_for, created_at + grace)
