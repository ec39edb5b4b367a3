"""What every `autopilot` command shares: its exit codes, and the settings read once with the command's overrides."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from shared.settings import Settings

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def settings_or_none(**overrides: Any) -> Settings | None:
    """The settings with `overrides` (None values are left out, but for local_events_webhook, which None turns
    off), or None after saying on stderr why they are invalid."""
    from shared.settings import Settings, get_settings

    try:
        base = get_settings()
        given = {key: value for key, value in overrides.items() if value is not None or key == "local_events_webhook"}
        return Settings.model_validate({**base.model_dump(), **given}) if given else base
    except (ValidationError, ValueError) as exc:
        print(f"autopilot: invalid settings: {exc}", file=sys.stderr)
        return None
