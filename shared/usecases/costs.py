"""What runs and endpoints cost: the price table (built in, or PRICE_TABLE_FILE) applied to what the app knows.

Before a run: its estimate from the validated data (rows, epochs, tokens as validation counts them) and the budget
guard. After: the job's duration from the run's history. Endpoints: per hour while deployed, so far since the last
deployment or restore, and what the idle teardown saved.
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.context import AppContext
from shared.domain.chatdata import ValidationReport
from shared.domain.errors import AutopilotError, InvalidInput
from shared.domain.finetune import FineTuneParameters
from shared.domain.lines import EffectiveLineConfig
from shared.domain.pricing import (
    EndpointCost,
    InvalidPriceTable,
    OverBudget,
    PriceTable,
    RunCost,
    RunEstimate,
    actual_cost,
    check_budget,
    endpoint_cost,
    estimate_run,
    price_table,
)
from shared.domain.runs import RunRecord, RunState
from shared.engine.profile import EngineProfile
from shared.settings import Settings
from shared.usecases.lines import settings_only

logger = logging.getLogger(__name__)

JOB_STARTED = (RunState.RUNNING, RunState.SUBMITTED)  # the first of these the run entered; Running may be skipped
JOB_ENDED = frozenset({RunState.TRAINED, RunState.FAILED, RunState.CANCELED})
NODES = 1  # the app's jobs and deployments use one node (instance) each

_cached: tuple[tuple[str, float] | None, PriceTable] | None = None


def prices(settings: Settings) -> PriceTable:
    """The price table in force: PRICE_TABLE_FILE's (read again when the file changes), else the built-in one."""
    global _cached
    path = settings.price_table_file
    try:
        stamp = (str(path), path.stat().st_mtime) if path is not None else None
        if _cached is None or _cached[0] != stamp:
            _cached = (stamp, price_table(path.read_bytes() if path is not None else None))
    except OSError as exc:
        raise InvalidPriceTable(f"PRICE_TABLE_FILE {path} cannot be read: {exc.strerror or exc}") from exc
    return _cached[1]


def tokens_per_row(report: ValidationReport) -> float:
    """The mean estimated tokens of a valid example, as validation counted them (0 without valid examples)."""
    summary = (report.stats.get("examples") or {}).get("estimated_tokens") or {}
    return float(summary.get("mean") or 0.0)


def estimate_for(
    settings: Settings,
    profile: EngineProfile,
    *,
    base_model: str,
    parameters: FineTuneParameters,
    train_rows: int,
    row_tokens: float,
) -> RunEstimate:
    """What a run of `train_rows` examples with these parameters is expected to take and cost on this engine
    (the dry run has settings and a profile, but no storage: hence not a context)."""
    table = prices(settings)
    instance_type = profile.finetune_instance_type
    sku = table.sku(instance_type) if instance_type else None
    gpus = NODES * sku.gpus if sku else 1
    return estimate_run(
        table,
        engine=profile.name,
        base_model=base_model,
        instance_type=instance_type,
        nodes=NODES,
        train_rows=train_rows,
        epochs=parameters.num_train_epochs,
        tokens_per_row=row_tokens,
        max_steps=parameters.max_steps,
        effective_batch=parameters.per_device_train_batch_size * parameters.gradient_accumulation_steps * gpus,
    )


def estimate_of_report(
    settings: Settings, profile: EngineProfile, record: RunRecord, report: ValidationReport
) -> RunEstimate:
    """The estimate of a validated run: its base model and parameters, the report's training rows and tokens."""
    return estimate_for(
        settings,
        profile,
        base_model=record.base_model,
        parameters=record.parameters,
        train_rows=report.split.train,
        row_tokens=tokens_per_row(report),
    )


def check_run_budget(settings: Settings, config: EffectiveLineConfig | None, estimate: RunEstimate) -> None:
    """OverBudget (over_budget, with the figures) when the estimate exceeds the line's max_run_cost, else
    MAX_RUN_COST (a dry run has no line: MAX_RUN_COST)."""
    limit = config.max_run_cost if config is not None else settings.max_run_cost
    if limit is None:
        return
    from_line = config is not None and limit != settings.max_run_cost
    check_budget(
        estimate, limit, limit_source=f"line {config.line}'s max_run_cost" if config and from_line else "MAX_RUN_COST"
    )


def estimate_within_budget(
    ctx: AppContext, record: RunRecord, report: ValidationReport
) -> tuple[RunEstimate | None, AutopilotError | None]:
    """The run's cost estimate, and why it may not be submitted: over its line's budget (over_budget, with the
    figures), or no estimate to hold to a budget. Without a budget, a price the table lacks only costs the estimate."""
    config = record.line_config or settings_only(ctx, record.line)  # a record from before lines
    try:
        estimate = estimate_of_report(ctx.settings, ctx.profile, record, report)
    except InvalidInput as exc:  # a SKU the price table lacks, an unreadable PRICE_TABLE_FILE
        logger.warning("run %s: no cost estimate: %s", record.run_id, exc.message, extra={"run_id": record.run_id})
        return None, (exc if config.max_run_cost is not None else None)
    try:
        check_run_budget(ctx.settings, config, estimate)
    except OverBudget as exc:
        return estimate, exc
    logger.info("run %s: estimated %s", record.run_id, estimate.summary(), extra={"run_id": record.run_id})
    return estimate, None


def job_seconds(record: RunRecord) -> float | None:
    """How long the run's job ran: from its start (running, else submitted) to its end; None until it ended."""
    started = next((t.at for state in JOB_STARTED for t in record.history if t.to_state == state), None)
    ended = next((t.at for t in record.history if t.to_state in JOB_ENDED), None)
    if started is None or ended is None:
        return None
    return max((ended - started).total_seconds(), 0.0)


def run_cost(ctx: AppContext, record: RunRecord) -> RunCost | None:
    """What the run's job cost: its duration × nodes × the SKU's price (zero on this machine); None until it ended."""
    seconds = job_seconds(record)
    if seconds is None:
        return None
    instance_type = ctx.profile.finetune_instance_type
    return actual_cost(
        prices(ctx.settings), engine=ctx.profile.name, instance_type=instance_type, nodes=NODES, seconds=seconds
    )


def live_periods(records: list[RunRecord], now: datetime) -> tuple[datetime | None, float, float]:
    """For the runs of one endpoint: when it last went live (deployed, or restored), the hours since, and the hours
    it spent torn down (each teardown until the next restore or deployment, or now)."""
    moves = sorted((t.at, t.to_state) for record in records for t in record.history)
    last_live: datetime | None = None
    down_since: datetime | None = None
    hours_down = 0.0
    for at, state in moves:
        if state == RunState.DEPLOYED:
            last_live = at
            if down_since is not None:
                hours_down += (at - down_since).total_seconds() / 3600
                down_since = None
        elif state == RunState.TORN_DOWN and down_since is None:
            down_since = at
    if down_since is not None:
        hours_down += (now - down_since).total_seconds() / 3600
        last_live = None  # torn down now: it costs nothing until restored
    hours_live = (now - last_live).total_seconds() / 3600 if last_live else 0.0
    return last_live, hours_live, hours_down


def endpoint_cost_of(ctx: AppContext, records: list[RunRecord], deployments: int) -> EndpointCost:
    """An endpoint's cost from its runs' history: `deployments` instances while live (blue and green both bill)."""
    _, hours_live, hours_down = live_periods(records, ctx.now())
    return endpoint_cost(
        prices(ctx.settings),
        engine=ctx.profile.name,
        instance_type=ctx.profile.serving_instance_type,
        instance_count=max(deployments, 1) * NODES,
        hours_deployed=hours_live,
        hours_torn_down=hours_down,
    )
