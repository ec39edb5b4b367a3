"""The dashboard's HTML: Jinja2 templates (autoescaped) and the assets they load, all served by the app itself."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from shared.domain.pricing import money
from shared.domain.runs import RunState
from shared.ui.auth import UI_PATH

ASSETS = {  # name: content type; nothing else under static/ is served
    "app.css": "text/css; charset=utf-8",
    "htmx-2.0.8.min.js": "text/javascript; charset=utf-8",
    "htmx-LICENSE.txt": "text/plain; charset=utf-8",
}
POLL_SECONDS = 5

_BADGES = {
    RunState.REJECTED: "bad",
    RunState.FAILED: "bad",
    RunState.ROLLED_BACK: "bad",
    RunState.CANCELED: "muted",
    RunState.GATED_OUT: "warn",
    RunState.SUPERSEDED: "muted",
    RunState.TORN_DOWN: "muted",
    RunState.DEPLOYED: "good",
}


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("shared.ui", "templates"),
        autoescape=select_autoescape(("html",), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        badge=badge_class,
        money=lambda amount, currency="USD": money(amount, currency),
        when=when,
        ago=ago,
        minutes=minutes,
        svg_uri=svg_data_uri,
        score=lambda value: "–" if value is None else f"{value:.3f}",
    )
    env.globals.update(ui=UI_PATH, poll_seconds=POLL_SECONDS, css=asset_text("app.css"))
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def render_standalone(template: str, **context: Any) -> str:
    """A page as one file to open without the app: its stylesheet inline, no script, no actions."""
    return render(template, standalone=True, viewer=None, notice=None, section=None, **context)


def asset(name: str) -> tuple[bytes, str] | None:
    """A static asset's bytes and content type; None for any other name."""
    if name not in ASSETS:
        return None
    return (resources.files("shared.ui").joinpath("static", name).read_bytes(), ASSETS[name])


def asset_text(name: str) -> str:
    found = asset(name)
    assert found is not None, name
    return found[0].decode()


def badge_class(state: object) -> str:
    return _BADGES.get(RunState(str(state)), "busy") if str(state) in RunState.__members__.values() else "muted"


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "–"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "–"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    future = seconds < 0
    text = _duration(abs(seconds))
    return f"in {text}" if future else f"{text} ago"


def minutes(value: float | None) -> str:
    return "–" if value is None else _duration(value * 60)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def svg_data_uri(svg: str | None) -> str:
    """An SVG as an <img> source: a stored SVG never runs script in a page as an image, as it could inline."""
    return "data:image/svg+xml;base64," + base64.b64encode((svg or "").encode()).decode()
