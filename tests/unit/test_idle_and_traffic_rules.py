"""The idle sweep's and the rollout's decisions, as functions on values (shared/domain/idle.py, traffic.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain.idle import idle_minutes, last_activity
from shared.domain.traffic import shifted_traffic, to_retire

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR, GRACE = timedelta(minutes=60), timedelta(minutes=30)


def test_the_latest_of_creation_request_and_deployment_is_the_last_activity():
    created, request, deployed = NOW - timedelta(hours=5), NOW - timedelta(hours=3), NOW - timedelta(minutes=2)

    assert last_activity(created, request, [None, deployed]) == deployed
    assert last_activity(created, None, []) == created
    assert last_activity(None, None, [None]) is None


def test_an_endpoint_idle_past_the_window_and_the_grace_period_may_go():
    minutes = idle_minutes(
        now=NOW, created_at=NOW - timedelta(hours=3), last_use=NOW - timedelta(minutes=90), idle_for=HOUR, grace=GRACE
    )

    assert minutes == 90.0


def test_a_recent_use_a_young_endpoint_or_unknown_times_keep_it():
    old = NOW - timedelta(hours=3)
    keep = [
        idle_minutes(now=NOW, created_at=old, last_use=NOW - timedelta(minutes=59), idle_for=HOUR, grace=GRACE),
        idle_minutes(now=NOW, created_at=NOW - timedelta(minutes=10), last_use=old, idle_for=HOUR, grace=GRACE),
        idle_minutes(now=NOW, created_at=None, last_use=old, idle_for=HOUR, grace=GRACE),
        idle_minutes(now=NOW, created_at=old, last_use=None, idle_for=HOUR, grace=GRACE),
    ]

    assert keep == [None, None, None, None]


def test_the_shift_gives_all_traffic_to_the_new_deployment_and_retires_the_rest():
    traffic = shifted_traffic("d-new", "d-old", keep_previous=False)

    assert traffic == {"d-new": 100}
    assert to_retire(traffic, ["d-old", "d-new", "d-stray"]) == ["d-old", "d-stray"]


def test_a_kept_previous_deployment_stays_at_zero_and_is_not_retired():
    traffic = shifted_traffic("d-new", "d-old", keep_previous=True)

    assert traffic == {"d-new": 100, "d-old": 0}
    assert to_retire(traffic, ["d-old", "d-new"]) == []
    assert shifted_traffic("d-first", None, keep_previous=True) == {"d-first": 100}
