"""Model lines: many fine-tuned assistants side by side. Pure.

A line is the first path segment under the datasets container: `datasets/<line>/<anything>.jsonl` belongs to
`<line>`; a blob at the container's root belongs to `default`. Each line has its own configuration
(`<line>/line.json`, or `line.json` at the root for `default`), its own model name, champion and endpoint.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from shared.domain.errors import InvalidInput
from shared.domain.finetune import FineTuneParameters

DEFAULT_LINE = "default"
LINE_CONFIG_FILE = "line.json"
LINE_NAME = re.compile(r"^[a-z][a-z0-9-]{1,23}$")  # 2-24 characters: lowercase letters, digits, hyphens


class InvalidLineName(InvalidInput):
    code = "invalid_line_name"


class InvalidLineConfig(InvalidInput):
    code = "invalid_line_config"


def line_of(blob_name: str) -> str:
    """The line a dataset blob belongs to; InvalidLineName when its folder is not a line name."""
    if "/" not in blob_name:
        return DEFAULT_LINE
    line = blob_name.split("/", 1)[0]
    if not LINE_NAME.fullmatch(line):
        raise InvalidLineName(
            f"{line!r} is not a line name: 2-24 lowercase letters, digits and hyphens, starting with a letter "
            f"(the first folder of {blob_name!r} names its line)"
        )
    return line


def check_line_name(line: str) -> str:
    if line != DEFAULT_LINE and not LINE_NAME.fullmatch(line):
        raise InvalidLineName(f"{line!r} is not a line name: 2-24 lowercase letters, digits and hyphens")
    return line


def line_config_blob(line: str) -> str:
    return LINE_CONFIG_FILE if line == DEFAULT_LINE else f"{line}/{LINE_CONFIG_FILE}"


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_improvement: StrictFloat | StrictInt | None = Field(None, ge=0, lt=1)
    champion_tolerance: StrictFloat | StrictInt | None = Field(None, ge=0)
    score_tolerance: StrictFloat | StrictInt | None = Field(None, ge=0, le=1)
    max_degenerate_rate: StrictFloat | StrictInt | None = Field(None, ge=0, le=1)
    max_forgetting_drop: StrictFloat | StrictInt | None = Field(None, ge=0, le=1)


class LineConfig(BaseModel):
    """`line.json` as its owner writes it: every key optional; the settings stand in for what it leaves out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: StrictStr | None = Field(None, min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    accumulate: StrictBool = False
    idle_minutes: StrictInt | None = Field(None, gt=0)
    gate: GateConfig = Field(default_factory=GateConfig)
    max_job_retries: StrictInt = Field(2, ge=0, le=10)
    max_run_cost: StrictFloat | StrictInt | None = Field(None, ge=0)  # over MAX_RUN_COST, for this line


class EffectiveLineConfig(BaseModel):
    """What a run of the line uses, the settings' defaults filled in. Recorded on every run, with its sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    line: str
    base_model: str
    parameters: FineTuneParameters
    accumulate: bool
    idle_minutes: float
    gate_min_improvement: float
    gate_champion_tolerance: float
    max_job_retries: int
    # the evidence gate's thresholds; the defaults are those of runs recorded before the evaluation existed
    gate_score_tolerance: float = 0.02
    gate_max_degenerate_rate: float = 0.2
    gate_max_forgetting_drop: float = 0.1
    max_run_cost: float | None = None  # the line's, else MAX_RUN_COST; None: no limit

    def canonical_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()


def parse_line_config(line: str, data: bytes) -> LineConfig:
    """`line.json`'s bytes as a LineConfig; InvalidLineConfig naming the key when it is not one."""
    try:
        return LineConfig.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(map(str, first["loc"])) or "(the document)"
        raise InvalidLineConfig(f"{line_config_blob(line)}: {key}: {first['msg']}") from exc


def parameters_error(line: str, exc: ValidationError) -> InvalidLineConfig:
    first = exc.errors()[0]
    key = ".".join(["parameters", *map(str, first["loc"])])
    return InvalidLineConfig(f"{line_config_blob(line)}: {key}: {first['msg']}")
