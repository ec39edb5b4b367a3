"""What the dev host answers an HTTP request with, before the server writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, document: Any) -> Reply:
        return cls(status, json.dumps(document).encode(), [("Content-Type", "application/json; charset=utf-8")])

    @classmethod
    def error(cls, status: int, code: str, message: str) -> Reply:
        """The app's error shape: `{"error": {"code": ..., "message": ...}}`."""
        return cls.json(status, {"error": {"code": code, "message": message}})


def unauthorized() -> Reply:
    return Reply.error(401, "unauthorized", "a valid function key is required (x-functions-key header or ?code=)")
