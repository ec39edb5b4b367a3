"""Typed bodies of the HTTP API: what a client may send, validated before any work is done."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.engine.base import EndpointInfo

_UNSAFE_PATH = re.compile(r"(^/)|(\\)|(^|/)\.\.?(/|$)|[\x00-\x1f]")


class CreateRunRequest(BaseModel):
    """A dataset to split (`dataset`), or explicit `train` and `test` files; blob names in the datasets container."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, min_length=1, max_length=1024)
    train: str | None = Field(None, min_length=1, max_length=1024)
    test: str | None = Field(None, min_length=1, max_length=1024)
    parameters: dict[str, Any] = Field(default_factory=dict, description="fine-tune parameter overrides")
    force: bool = Field(False, description="a new run even when this content and these parameters ran before")
    line: str | None = Field(None, min_length=2, max_length=24, description="default: the dataset's folder")

    @field_validator("dataset", "train", "test")
    @classmethod
    def _safe_relative_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _UNSAFE_PATH.search(value):
            raise ValueError("must be a relative blob name without '..', '.', backslashes or control characters")
        if not value.endswith(".jsonl"):
            raise ValueError("must name a .jsonl file")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> CreateRunRequest:
        if (self.dataset is None) == (self.train is None and self.test is None) or (self.train is None) != (
            self.test is None
        ):
            raise ValueError("give either dataset, or both train and test")
        return self


class EndpointView(BaseModel):
    """An endpoint as the API shows it: never a key."""

    name: str
    scoring_uri: str | None
    managed: bool
    traffic: dict[str, int]
    request_count: int
    created_at: datetime | None
    last_request_at: datetime | None
    idle_minutes: float | None

    @classmethod
    def of(cls, endpoint: EndpointInfo, now: datetime) -> EndpointView:
        last = endpoint.last_request_at or endpoint.created_at
        return cls(
            name=endpoint.name,
            scoring_uri=endpoint.scoring_uri,
            managed=endpoint.is_managed,
            traffic=dict(endpoint.traffic),
            request_count=endpoint.request_count,
            created_at=endpoint.created_at,
            last_request_at=endpoint.last_request_at,
            idle_minutes=round((now - last).total_seconds() / 60, 1) if last else None,
        )
