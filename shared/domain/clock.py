"""The app's one clock: aware UTC times everywhere (use cases take theirs from the context, to be testable)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
