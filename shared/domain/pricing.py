"""What a fine-tuning run will cost before it runs, what it cost after, and what an endpoint costs. Pure: the only
I/O is reading the packaged price table (prices.json); an override table's bytes are passed in.

Throughput on Azure ML is derived, not measured: 6 FLOPs per parameter per trained token (forward and backward)
at the table's effective TFLOPS per GPU. Locally it is the table's measured tokens per second of this machine.
"""

from __future__ import annotations

import math
import re
from datetime import date
from functools import cache
from importlib import resources
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from shared.domain.errors import AutopilotError, InvalidInput

PRICE_TABLE_SETTING = "PRICE_TABLE_FILE"
DEFAULT_PARAMETERS_BILLION = 7.0
FLOPS_PER_PARAMETER_TOKEN = 6
REFERENCE_LOCAL_MODEL = "smollm2-135m-instruct"  # the local figure others are scaled from, by parameters
_MODEL_NAME = re.compile(r"/models/(?P<name>[^/]+)")
LowerName = Annotated[str, AfterValidator(str.lower)]


class InvalidPriceTable(InvalidInput):
    code = "invalid_price_table"


class UnknownPrice(InvalidInput):
    """The price table has no price for an instance type: add it to a table file named by PRICE_TABLE_FILE."""

    code = "unknown_price"


class OverBudget(AutopilotError):
    code = "over_budget"
    http_status = 422


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SkuPrice(_Frozen):
    per_hour: float = Field(ge=0)
    gpus: int = Field(ge=1)
    gpu: str
    effective_tflops_per_gpu: float = Field(gt=0)


class LocalMachine(_Frozen):
    per_hour: float = Field(0.0, ge=0)
    tokens_per_second: dict[LowerName, PositiveFloat]  # by lowercase model name
    source: str


class PriceTable(_Frozen):
    source: str
    retrieved: date
    currency: str
    region: str
    note: str
    throughput_source: str
    skus: dict[str, SkuPrice]
    models: dict[LowerName, PositiveFloat]  # parameters in billions, by lowercase model name
    local: LocalMachine

    @model_validator(mode="after")
    def _distinct_skus(self) -> PriceTable:
        if len({name.lower() for name in self.skus}) != len(self.skus):
            raise ValueError("skus: two entries differ only in case")
        return self

    def sku(self, instance_type: str) -> SkuPrice | None:
        wanted = instance_type.lower()
        return next((price for name, price in self.skus.items() if name.lower() == wanted), None)

    def parameters_billion(self, base_model: str) -> float | None:
        """By the model's name: the segment after /models/ of an azureml:// id, else the last path segment."""
        return self.models.get(model_name(base_model))


def model_name(base_model: str) -> str:
    match = _MODEL_NAME.search(base_model)
    return (match["name"] if match else base_model.rstrip("/").rpartition("/")[2]).lower()


def parse_price_table(data: bytes) -> PriceTable:
    try:
        return PriceTable.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(document)'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidPriceTable(f"price table: {problems}") from exc


@cache
def builtin_price_table() -> PriceTable:
    return parse_price_table(resources.files("shared.domain").joinpath("prices.json").read_bytes())


def price_table(override: bytes | None) -> PriceTable:
    return builtin_price_table() if override is None else parse_price_table(override)


def money(amount: float, currency: str) -> str:
    return f"${amount:.2f}" if currency.upper() == "USD" else f"{amount:.2f} {currency}"


class RunEstimate(_Frozen):
    engine: str
    instance_type: str | None
    nodes: int
    gpus: int
    train_rows: int
    epochs: int
    tokens_per_row: float
    billed_tokens: int
    tokens_per_second: float
    machine_hours: float
    gpu_hours: float
    price_per_hour: float
    cost: float
    currency: str
    assumptions: list[str]

    def summary(self) -> str:
        tokens = f"≈ {_count(self.billed_tokens)} tokens"
        cost = f"≈ {money(self.cost, self.currency)}"
        if self.engine == "local":
            if not self.tokens_per_second:
                return f"{tokens} on the local machine, duration unknown (no throughput known), {cost}"
            return f"{tokens}, {_hours(self.machine_hours)} machine-hours on the local machine, {cost}"
        return f"{tokens}, {_hours(self.gpu_hours)} GPU-hours on {self.nodes} × {self.instance_type}, {cost}"


def estimate_run(
    table: PriceTable,
    *,
    engine: str,
    base_model: str,
    instance_type: str | None,
    nodes: int,
    train_rows: int,
    epochs: int,
    tokens_per_row: float,
    max_steps: int = -1,
    effective_batch: int | None = None,
) -> RunEstimate:
    _require_counts(nodes=nodes, train_rows=train_rows, epochs=epochs, tokens_per_row=tokens_per_row)
    rows = train_rows * epochs
    assumptions = [f"training rows: {train_rows:,} × {epochs} epoch(s) = {rows:,}"]
    if max_steps > 0 and effective_batch:
        if max_steps * effective_batch < rows:
            rows = max_steps * effective_batch
            assumptions.append(f"capped by max_steps: {max_steps:,} steps × {effective_batch} rows a step = {rows:,}")
    elif max_steps > 0:
        assumptions.append(f"max_steps {max_steps} not applied: the effective batch size is not known")
    billed_tokens = round(rows * tokens_per_row)
    assumptions.append(
        f"{tokens_per_row:g} estimated tokens a row, as validation counts them (4 characters a token, "
        f"plus 4 a message): {billed_tokens:,} tokens"
    )
    if engine == "local":
        tokens_per_second, gpus, price = _local_throughput(table, base_model, assumptions), 0, table.local.per_hour
        instance_type = None
        assumptions.append(f"local machine: {price:g} {table.currency} an hour")
    else:
        sku = _sku_price(table, instance_type)
        gpus, price = nodes * sku.gpus, sku.per_hour
        tokens_per_second = _azureml_throughput(table, base_model, sku, gpus, assumptions)
        assumptions.append(
            f"{price:g} {table.currency} per node-hour for {instance_type} ({table.region}, from the price "
            f"table of {table.retrieved.isoformat()}: {table.source})"
        )
        assumptions.append("not included: model import, preprocessing, evaluation, queueing, node start-up, storage")
    machine_hours = billed_tokens / tokens_per_second / 3600 if tokens_per_second else 0.0
    return RunEstimate(
        engine=engine,
        instance_type=instance_type,
        nodes=nodes,
        gpus=gpus,
        train_rows=train_rows,
        epochs=epochs,
        tokens_per_row=tokens_per_row,
        billed_tokens=billed_tokens,
        tokens_per_second=tokens_per_second,
        machine_hours=machine_hours,
        gpu_hours=machine_hours * gpus,
        price_per_hour=price,
        cost=round(machine_hours * nodes * price, 2),
        currency=table.currency,
        assumptions=assumptions,
    )


def _azureml_throughput(table: PriceTable, base_model: str, sku: SkuPrice, gpus: int, notes: list[str]) -> float:
    billions = table.parameters_billion(base_model)
    if billions is None:
        billions = DEFAULT_PARAMETERS_BILLION
        notes.append(f"parameter count of {base_model} not in the price table: {billions:g}B assumed")
    else:
        notes.append(f"{billions:g}B parameters for {model_name(base_model)}")
    tokens_per_second = gpus * sku.effective_tflops_per_gpu * 1e12 / (FLOPS_PER_PARAMETER_TOKEN * billions * 1e9)
    notes.append(
        f"throughput: {gpus} × {sku.gpu} at {sku.effective_tflops_per_gpu:g} effective TFLOPS each ÷ "
        f"({FLOPS_PER_PARAMETER_TOKEN} FLOPs per parameter per trained token, forward and backward, × {billions:g}B) "
        f"= {tokens_per_second:,.0f} tokens/s; 6 is full fine-tuning's count, LoRA needs about two thirds of it, "
        "so the duration errs long"
    )
    return tokens_per_second


def _local_throughput(table: PriceTable, base_model: str, notes: list[str]) -> float:
    name, measured = model_name(base_model), table.local.tokens_per_second
    if name in measured:
        notes.append(f"throughput: {measured[name]:g} tokens/s for {name}, measured here (see local.source)")
        return measured[name]
    billions, reference = table.parameters_billion(name), table.parameters_billion(REFERENCE_LOCAL_MODEL)
    if billions and reference and REFERENCE_LOCAL_MODEL in measured:
        scaled = measured[REFERENCE_LOCAL_MODEL] * reference / billions
        notes.append(
            f"throughput: {scaled:,.1f} tokens/s, the {REFERENCE_LOCAL_MODEL} figure "
            f"({measured[REFERENCE_LOCAL_MODEL]:g}) scaled by parameters ({reference:g}B / {billions:g}B)"
        )
        return scaled
    notes.append(f"no throughput known for {base_model} on the local machine: its duration is not estimated")
    return 0.0


class RunCost(_Frozen):
    engine: str
    instance_type: str | None
    nodes: int
    seconds: float
    machine_hours: float
    price_per_hour: float
    cost: float
    currency: str

    def summary(self) -> str:
        where = "the local machine" if self.instance_type is None else f"{self.nodes} × {self.instance_type}"
        return f"{_hours(self.machine_hours)} hours on {where}, {money(self.cost, self.currency)}"


def actual_cost(table: PriceTable, *, engine: str, instance_type: str | None, nodes: int, seconds: float) -> RunCost:
    _require_counts(nodes=nodes, seconds=seconds)
    local = engine == "local"
    price = table.local.per_hour if local else _sku_price(table, instance_type).per_hour
    hours = seconds / 3600
    return RunCost(
        engine=engine,
        instance_type=None if local else instance_type,
        nodes=nodes,
        seconds=seconds,
        machine_hours=hours,
        price_per_hour=price,
        cost=round(hours * nodes * price, 2),
        currency=table.currency,
    )


class EndpointCost(_Frozen):
    instance_type: str | None
    instance_count: int
    per_hour: float  # all instances together
    hours_deployed: float
    cost_so_far: float
    hours_torn_down: float
    saved: float
    currency: str


def endpoint_cost(
    table: PriceTable,
    *,
    engine: str,
    instance_type: str | None,
    instance_count: int,
    hours_deployed: float,
    hours_torn_down: float,
) -> EndpointCost:
    """Locally an endpoint shares the one machine: it costs nothing of its own."""
    _require_counts(instance_count=instance_count, hours_deployed=hours_deployed, hours_torn_down=hours_torn_down)
    local = engine == "local"
    per_hour = 0.0 if local else instance_count * _sku_price(table, instance_type).per_hour
    return EndpointCost(
        instance_type=None if local else instance_type,
        instance_count=instance_count,
        per_hour=per_hour,
        hours_deployed=hours_deployed,
        cost_so_far=round(hours_deployed * per_hour, 2),
        hours_torn_down=hours_torn_down,
        saved=round(hours_torn_down * per_hour, 2),
        currency=table.currency,
    )


def check_budget(estimate: RunEstimate, limit: float | None, *, limit_source: str) -> None:
    if limit is not None and estimate.cost > limit:
        raise OverBudget(
            f"estimated cost {estimate.currency} {estimate.cost:.2f} exceeds {limit_source} {limit:.2f} "
            f"({estimate.summary()})"
        )


def _sku_price(table: PriceTable, instance_type: str | None) -> SkuPrice:
    price = table.sku(instance_type) if instance_type else None
    if price is None:
        raise UnknownPrice(
            f"no price for instance type {instance_type or '(none given)'} in the price table of "
            f"{table.retrieved.isoformat()} ({table.region}): add it to a price table file and set "
            f"{PRICE_TABLE_SETTING} to that file"
        )
    return price


def _require_counts(**values: float) -> None:
    for name, value in values.items():
        minimum = 1 if name in ("nodes", "instance_count") else 0
        if not math.isfinite(value) or value < minimum:
            raise InvalidInput(f"{name} must be at least {minimum}, not {value}")


def _count(tokens: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if tokens >= size:
            return f"{tokens / size:.1f}{suffix}"
    return str(tokens)


def _hours(hours: float) -> str:
    return f"{hours:.0f}" if hours >= 10 else f"{hours:.2g}"
