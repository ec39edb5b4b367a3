"""Model lines: a line's effective configuration, and what the API and the CLI show of each line."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ValidationError

from shared.adapters.storage import BlobNotFound
from shared.context import AppContext
from shared.domain.errors import AutopilotError
from shared.domain.finetune import parameters_for
from shared.domain.lines import (
    DEFAULT_LINE,
    LINE_NAME,
    EffectiveLineConfig,
    LineConfig,
    check_line_name,
    line_config_blob,
    parameters_error,
    parse_line_config,
)
from shared.domain.naming import endpoint_name_for, line_model_name
from shared.domain.runs import ModelVersion, RunRecord, RunState
from shared.domain.tags import CHAMPION
from shared.engine.base import EndpointInfo


def line_config(ctx: AppContext, line: str) -> EffectiveLineConfig:
    """The line's `line.json` over the settings (read afresh: an owner's edit counts from the next upload).
    InvalidLineConfig, naming the key, when it is not a valid config."""
    try:
        data, _ = ctx.store.read(ctx.settings.datasets_container, line_config_blob(line))
    except BlobNotFound:
        return effective(ctx, line, LineConfig())
    return effective(ctx, line, parse_line_config(line, data))


def effective(ctx: AppContext, line: str, config: LineConfig) -> EffectiveLineConfig:
    settings = ctx.settings
    base_model = config.base_model or ctx.profile.base_model
    try:
        parameters = parameters_for(
            ctx.profile.presets_for(base_model), {**settings.finetune_overrides, **config.parameters}
        )
    except ValidationError as exc:
        raise parameters_error(line, exc) from exc
    gate = config.gate
    return EffectiveLineConfig(
        line=line,
        base_model=base_model,
        parameters=parameters,
        accumulate=config.accumulate,
        idle_minutes=config.idle_minutes if config.idle_minutes is not None else settings.idle_minutes,
        gate_min_improvement=(
            gate.min_improvement if gate.min_improvement is not None else settings.gate_min_improvement
        ),
        gate_champion_tolerance=(
            gate.champion_tolerance if gate.champion_tolerance is not None else settings.gate_champion_tolerance
        ),
        max_job_retries=config.max_job_retries,
        gate_score_tolerance=_either(gate.score_tolerance, settings.gate_score_tolerance),
        gate_max_degenerate_rate=_either(gate.max_degenerate_rate, settings.gate_max_degenerate_rate),
        gate_max_forgetting_drop=_either(gate.max_forgetting_drop, settings.gate_max_forgetting_drop),
        max_run_cost=float(config.max_run_cost) if config.max_run_cost is not None else settings.max_run_cost,
    )


def _either(line_value: float | None, setting: float) -> float:
    return float(line_value) if line_value is not None else setting


def settings_only(ctx: AppContext, line: str = DEFAULT_LINE) -> EffectiveLineConfig:
    """The configuration of a line whose own is unusable (or whose name is): what its rejected upload records."""
    return effective(ctx, line, LineConfig())


class LineView(BaseModel):
    """A line as the API and `autopilot lines` show it."""

    line: str
    config: EffectiveLineConfig | None  # None: its line.json is unusable (see config_error)
    config_error: str | None = None
    model_name: str
    champion: ModelVersion | None
    endpoint: str
    endpoint_state: str  # serving (has traffic), idle_at_zero (no traffic), torn_down, none
    scoring_uri: str | None
    last_run: str | None
    last_run_state: RunState | None
    runs_by_state: dict[str, int]


def list_lines(ctx: AppContext) -> list[LineView]:
    """Every line that has runs, the default line first."""
    runs = ctx.ledger.list(limit=100_000)
    names = sorted({r.line for r in runs if r.line == DEFAULT_LINE or LINE_NAME.fullmatch(r.line)})
    endpoints = {endpoint.name: endpoint for endpoint in ctx.engine.list_endpoints()}
    names.sort(key=lambda name: (name != DEFAULT_LINE, name))
    return [_view(ctx, name, [r for r in runs if r.line == name], endpoints) for name in names]


def get_line(ctx: AppContext, line: str) -> LineView:
    check_line_name(line)
    mine = ctx.ledger.list(line=line, limit=100_000)
    endpoints = {endpoint.name: endpoint for endpoint in ctx.engine.list_endpoints()}
    return _view(ctx, line, mine, endpoints)


def _view(ctx: AppContext, line: str, runs: list[RunRecord], endpoints: dict[str, EndpointInfo]) -> LineView:
    config: EffectiveLineConfig | None
    try:
        config, error = line_config(ctx, line), None
    except AutopilotError as exc:
        config, error = None, exc.message
    base_model = config.base_model if config else ctx.profile.base_model
    model_name = line_model_name(line, base_model, ctx.settings.finetuned_model_suffix)
    endpoint_name = endpoint_name_for(model_name, ctx.profile.endpoint_scope)
    champion = ctx.engine.get_model(model_name, alias=CHAMPION)
    endpoint = endpoints.get(endpoint_name)
    if endpoint is not None:
        state = "serving" if any(endpoint.traffic.values()) else "idle_at_zero"
    elif any(r.state == RunState.TORN_DOWN for r in runs):
        state = "torn_down"
    else:
        state = "none"
    last = max(runs, key=lambda r: r.created_at, default=None)
    return LineView(
        line=line,
        config=config,
        config_error=error,
        model_name=model_name,
        champion=ModelVersion(name=champion.name, version=champion.version) if champion else None,
        endpoint=endpoint_name,
        endpoint_state=state,
        scoring_uri=endpoint.scoring_uri if endpoint else None,
        last_run=last.run_id if last else None,
        last_run_state=last.state if last else None,
        runs_by_state=dict(Counter(str(r.state) for r in runs)),
    )
