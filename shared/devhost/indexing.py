"""The app as the Functions host indexes it: `app.get_functions()` once, each trigger binding with its `%NAME%`
references resolved from the app settings, timer schedules checked, the route prefix from host.json."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
from pydantic import AliasChoices, SecretStr

from shared.devhost import ncrontab
from shared.settings import Settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DELIVERED_TRIGGERS = frozenset({"httpTrigger", "blobTrigger", "timerTrigger", "eventGridTrigger"})
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


class DevHostError(RuntimeError):
    """The app cannot be hosted as configured (a binding names an unknown setting, a schedule is invalid...)."""


_indexed_apps: dict[int, tuple[Any, list[func.Function]]] = {}
_index_lock = threading.Lock()


def index_app(app: func.FunctionApp) -> list[func.Function]:
    """`app.get_functions()`, called once per app object in this process (a second call raises in the library).
    Everything in the process that indexes an app (the dev host, the demo, test helpers) goes through here."""
    with _index_lock:
        cached = _indexed_apps.get(id(app))
        if cached is not None and cached[0] is app:
            return cached[1]
        functions = app.get_functions()
        _indexed_apps[id(app)] = (app, functions)
        return functions


@dataclass(frozen=True)
class HostedFunction:
    """One function of the index: its trigger binding (settings resolved) and the user function."""

    name: str
    trigger: Mapping[str, Any]
    bindings: tuple[Mapping[str, Any], ...]
    call: Callable[..., Any]

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def arg_name(self) -> str:
        return str(self.trigger["name"])


def hosted_functions(app: func.FunctionApp, settings: Settings) -> dict[str, HostedFunction]:
    """Every function of `app` that has a trigger, by name; DevHostError when one cannot be hosted as configured."""
    hosted: dict[str, HostedFunction] = {}
    for function in index_app(app):
        bindings = tuple(json.loads(function.get_function_json())["bindings"])
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
        name = function.get_function_name()
        assert name is not None  # typed Optional, but the library falls back to the Python function's name
        if trigger is None:
            logger.warning("function %s has no trigger; the dev host skips it", name)
            continue
        try:
            resolved = {key: _resolve(value, settings) for key, value in trigger.items()}
        except DevHostError as exc:
            raise DevHostError(f"function {name}: {exc}") from exc
        hosted[name] = HostedFunction(name, resolved, bindings, function.get_user_function())
        unsupported = [
            b["type"] for b in bindings if b is not trigger and not (b["type"] == "http" and b["name"] == "$return")
        ]
        if unsupported:
            logger.warning("function %s: the dev host does not bind %s", name, ", ".join(unsupported))
        if hosted[name].trigger_type == "timerTrigger":
            try:
                ncrontab.next_occurrence(str(resolved["schedule"]), datetime.now(UTC))  # parses, and occurs
            except ValueError as exc:
                raise DevHostError(f"function {name}: {exc}") from exc
        elif hosted[name].trigger_type not in DELIVERED_TRIGGERS:
            logger.warning("function %s: the dev host cannot deliver %s", name, hosted[name].trigger_type)
    return hosted


def setting_value(settings: Settings, name: str) -> str:
    """The value of app setting `name` in a Settings object: the field whose alias is that name."""
    for field_name, info in type(settings).model_fields.items():
        names = {field_name, info.alias}
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c for c in info.validation_alias.choices if isinstance(c, str))
        elif isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
        if name in names:
            value = getattr(settings, field_name)
            if value is None:
                raise DevHostError(f"app setting {name} is not set")
            return value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    raise DevHostError(f"app setting {name} is not one the app defines (see shared/settings.py)")


def _resolve(value: Any, settings: Settings) -> Any:
    if isinstance(value, str):
        return _SETTING_REFERENCE.sub(lambda m: setting_value(settings, m.group(1)), value)
    return value


def host_route_prefix() -> str:
    """extensions.http.routePrefix of host.json ("api" when it says nothing)."""
    try:
        host = json.loads((REPO_ROOT / "host.json").read_text())
        return str(host.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")
    except (OSError, ValueError):
        return "api"
