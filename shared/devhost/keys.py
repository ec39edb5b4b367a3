"""The function key, as Azure enforces it: header `x-functions-key` or query parameter `code`."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

from shared.settings import Settings

KEY_HEADER = "x-functions-key"
KEY_PARAMETER = "code"


def function_key(settings: Settings) -> str:
    """DEVHOST_FUNCTION_KEY, or a fresh random key when it is not set."""
    if settings.devhost_function_key is not None:
        return settings.devhost_function_key.get_secret_value()
    return secrets.token_urlsafe(32)


def dashboard_key(settings: Settings) -> str:
    """DASHBOARD_KEY, or a fresh random key when it is not set (the dev host prints it, as it prints the function
    key)."""
    if settings.dashboard_key is not None:
        return settings.dashboard_key.get_secret_value()
    return secrets.token_urlsafe(32)


def admits(key: str, headers: Mapping[str, str], query: Mapping[str, list[str]]) -> bool:
    """Whether a request (lower-cased header names, parsed query) offers `key`."""
    offered = headers.get(KEY_HEADER) or next(iter(query.get(KEY_PARAMETER, [])), None)
    return offered is not None and hmac.compare_digest(offered.encode(), key.encode())
