"""What the dashboard's pages show, read from the ledger, the engine and the run's artifacts. Read-only: its actions
are the API's own use cases (restore_endpoint, cancel_run, create_run)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import orjson
from pydantic import ValidationError

from shared.adapters.storage import BlobNotFound, ETagMismatch
from shared.api.http import EndpointView
from shared.context import AppContext
from shared.domain.charts import score_chart_svg
from shared.domain.chatdata import ValidationReport
from shared.domain.errors import AutopilotError, InvalidInput, NotFound
from shared.domain.evaluation.evidence import Evaluation
from shared.domain.idle import entered, last_activity, teardown_due
from shared.domain.lines import LINE_NAME
from shared.domain.naming import is_resource_name
from shared.domain.pricing import EndpointCost, RunCost
from shared.domain.runs import TERMINAL_STATES, RunRecord, RunState
from shared.usecases.costs import endpoint_cost_of, run_cost
from shared.usecases.intake import is_dataset_blob
from shared.usecases.lines import LineView, get_line, line_config, list_lines
from shared.usecases.queries import get_run

logger = logging.getLogger(__name__)
DocumentT = TypeVar("DocumentT", ValidationReport, Evaluation)

# States in which a run changes by itself: its page polls while it is in one.
ACTIVE_STATES = frozenset(RunState) - TERMINAL_STATES - {RunState.DEPLOYED, RunState.TORN_DOWN}
CANCELABLE = frozenset({RunState.SUBMITTED, RunState.RUNNING})
RECENT_RUNS = 12
MAX_DATASETS_LISTED = 200
LOGIN_TICKETS_PREFIX = "dashboard/used-tickets/"


@dataclass(frozen=True)
class EndpointRow:
    view: EndpointView
    line: str | None
    idle_window_minutes: float
    teardown_at: datetime | None  # from when the idle sweep may tear it down
    cost: EndpointCost | None
    run_ids: list[str]  # the runs it serves


@dataclass(frozen=True)
class TornDownEndpoint:
    name: str
    line: str
    run_id: str  # the champion's run, which a restore deploys again
    model: str
    since: datetime | None
    cost: EndpointCost | None


@dataclass(frozen=True)
class EndpointsPage:
    live: list[EndpointRow]
    torn_down: list[TornDownEndpoint]
    now: datetime

    @property
    def cost_per_hour(self) -> float:
        return sum(row.cost.per_hour for row in self.live if row.cost)

    @property
    def saved(self) -> float:
        """What the idle teardown saved on every endpoint: its hours torn down × its price."""
        costs = [row.cost for row in self.live] + [row.cost for row in self.torn_down]
        return sum(cost.saved for cost in costs if cost is not None)


@dataclass(frozen=True)
class OverviewPage:
    lines: list[LineView]
    active: list[RunRecord]
    recent: list[RunRecord]
    endpoints: EndpointsPage
    unreadable: int


@dataclass(frozen=True)
class LinePage:
    line: LineView
    runs: list[RunRecord]
    score_chart_svg: str
    datasets: list[str]  # the line's uploads, for an ad-hoc run

    @property
    def active(self) -> bool:
        return any(run.state in ACTIVE_STATES for run in self.runs)


@dataclass(frozen=True)
class RunPage:
    record: RunRecord
    report: ValidationReport | None
    loss_curve_svg: str | None
    evaluation: Evaluation | None
    cost: RunCost | None
    problems: list[str] = field(default_factory=list)  # artifacts that could not be read, named

    @property
    def active(self) -> bool:
        return self.record.state in ACTIVE_STATES

    @property
    def cancelable(self) -> bool:
        return self.record.state in CANCELABLE


def overview_page(ctx: AppContext) -> OverviewPage:
    listing = ctx.ledger.listing(limit=200)
    runs = listing.records
    return OverviewPage(
        lines=list_lines(ctx),
        active=[run for run in runs if run.state in ACTIVE_STATES],
        recent=runs[:RECENT_RUNS],
        endpoints=endpoints_page(ctx),
        unreadable=len(listing.unreadable),
    )


def line_page(ctx: AppContext, line: str) -> LinePage:
    view = get_line(ctx, line)
    runs = ctx.ledger.list(line=line, limit=500)
    chronological = sorted(runs, key=lambda run: run.order)
    metric = ctx.settings.eval_primary_metric
    points = [
        (
            run.run_id[3:9],
            run.evaluation.challenger.scores.get(run.evaluation.primary_metric),
            run.evaluation.reference.scores.get(run.evaluation.primary_metric) if run.evaluation.reference else None,
        )
        for run in chronological
        if run.evaluation is not None
    ]
    chart = score_chart_svg(points, metric=metric, title=f"Line {line}: challenger and champion, per run")
    return LinePage(line=view, runs=runs, score_chart_svg=chart, datasets=line_datasets(ctx, line))


def line_datasets(ctx: AppContext, line: str) -> list[str]:
    """The line's uploads (blob names in the datasets container), newest name last, for an ad-hoc run."""
    prefix = None if line == "default" else f"{line}/"
    names = []
    for name in ctx.store.list_names(ctx.settings.datasets_container, prefix=prefix):
        in_line = prefix is not None or "/" not in name
        if in_line and is_dataset_blob(ctx.settings, name):
            names.append(name)
        if len(names) >= MAX_DATASETS_LISTED:
            break
    return sorted(names)


def run_page(ctx: AppContext, run_id: str) -> RunPage:
    record = get_run(ctx, run_id)
    problems: list[str] = []
    report = _document(ctx, record.artifacts.report_json, ValidationReport, problems)
    evaluation = _document(ctx, record.artifacts.evaluation_json, Evaluation, problems)
    svg = _blob(ctx, record.artifacts.loss_curve, problems)
    try:
        cost = run_cost(ctx, record)
    except AutopilotError as exc:
        cost, problems = None, [*problems, f"cost: {exc.message}"]
    return RunPage(
        record=record,
        report=report,
        loss_curve_svg=svg.decode("utf-8", "replace") if svg else None,
        evaluation=evaluation,
        cost=cost,
        problems=problems,
    )


def endpoints_page(ctx: AppContext) -> EndpointsPage:
    now = ctx.now()
    records = ctx.ledger.list(states={RunState.DEPLOYED, RunState.TORN_DOWN, RunState.DEPLOYING}, limit=10_000)
    by_endpoint: dict[str, list[RunRecord]] = {}
    for record in ctx.ledger.list(limit=100_000):
        if record.endpoint is not None:
            by_endpoint.setdefault(record.endpoint.name, []).append(record)
    live = []
    grace = timedelta(minutes=ctx.settings.idle_grace_minutes)
    for endpoint in ctx.engine.list_endpoints():
        serving = [
            r for r in records if r.endpoint and r.endpoint.name == endpoint.name and r.state == RunState.DEPLOYED
        ]
        line = serving[0].line if serving else _line_of_endpoint(by_endpoint.get(endpoint.name, []))
        window = _idle_window(ctx, line)
        last_use = last_activity(
            endpoint.created_at, endpoint.last_request_at, [entered(r, RunState.DEPLOYED) for r in serving]
        )
        due = teardown_due(
            created_at=endpoint.created_at, last_use=last_use, idle_for=timedelta(minutes=window), grace=grace
        )
        live.append(
            EndpointRow(
                view=EndpointView.of(endpoint, now),
                line=line,
                idle_window_minutes=window,
                teardown_at=due if endpoint.is_managed else None,
                cost=_endpoint_cost(ctx, by_endpoint.get(endpoint.name, []), len(endpoint.traffic)),
                run_ids=[r.run_id for r in serving],
            )
        )
    live_names = {row.view.name for row in live}
    torn_down = []
    for name, runs in sorted(by_endpoint.items()):
        down = [r for r in runs if r.state == RunState.TORN_DOWN]
        if name in live_names or not down:
            continue
        champion = max(down, key=lambda r: r.order)
        torn_down.append(
            TornDownEndpoint(
                name=name,
                line=champion.line,
                run_id=champion.run_id,
                model=f"{champion.model.name}:{champion.model.version}" if champion.model else "?",
                since=entered(champion, RunState.TORN_DOWN),
                cost=_endpoint_cost(ctx, runs, 1),
            )
        )
    return EndpointsPage(live=live, torn_down=torn_down, now=now)


def restorable_endpoint(ctx: AppContext, name: str) -> TornDownEndpoint:
    """The torn-down endpoint of that name, as the endpoints page lists it; InvalidInput or NotFound otherwise."""
    if not is_resource_name(name):
        raise InvalidInput(f"{name!r} is not an endpoint name")
    found = next((row for row in endpoints_page(ctx).torn_down if row.name == name), None)
    if found is None:
        raise NotFound(f"no torn-down endpoint {name} to restore")
    return found


def redeem_login_ticket(ctx: AppContext, nonce: str) -> bool:
    """Use a one-time sign-in ticket: True the first time its nonce is seen (across instances: a blob written only
    if absent), False after."""
    try:
        ctx.store.write(ctx.settings.runs_container, f"{LOGIN_TICKETS_PREFIX}{nonce}", b"", if_absent=True)
    except ETagMismatch:
        return False
    return True


def _line_of_endpoint(runs: list[RunRecord]) -> str | None:
    return max(runs, key=lambda r: r.order).line if runs else None


def _idle_window(ctx: AppContext, line: str | None) -> float:
    if line is None or not (line == "default" or LINE_NAME.fullmatch(line)):
        return ctx.settings.idle_minutes
    try:
        return line_config(ctx, line).idle_minutes
    except AutopilotError:
        return ctx.settings.idle_minutes


def _endpoint_cost(ctx: AppContext, runs: list[RunRecord], deployments: int) -> EndpointCost | None:
    try:
        return endpoint_cost_of(ctx, runs, deployments)
    except AutopilotError as exc:  # a serving size the price table lacks: the page says so instead of a figure
        logger.warning("no endpoint cost: %s", exc.message)
        return None


def _blob(ctx: AppContext, path: str | None, problems: list[str]) -> bytes | None:
    if not path:
        return None
    container, _, name = path.partition("/")
    try:
        return ctx.store.read(container, name)[0]
    except BlobNotFound:
        problems.append(f"{path} is missing")
        return None


def _document(ctx: AppContext, path: str | None, model: type[DocumentT], problems: list[str]) -> DocumentT | None:
    data = _blob(ctx, path, problems)
    if data is None:
        return None
    try:
        return model.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        problems.append(f"{path} does not parse: {str(exc).splitlines()[0]}")
        return None
