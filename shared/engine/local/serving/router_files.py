"""The router's files in its endpoint folder: configuration and keys re-read when they change, and the request
statistics it keeps across restarts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.adapters.files import write_json_atomically

logger = logging.getLogger("shared.engine.local.serving.router")


class WatchedJson:
    """A JSON file re-read only when it changed (mtime, inode or size); the last good content survives bad reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return self._value
        signature = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        with self._lock:
            if signature != self._signature:
                try:
                    self._value = json.loads(self.path.read_text(encoding="utf-8"))
                    self._signature = signature
                except (OSError, ValueError) as exc:
                    logger.warning("could not read %s (%s); keeping the previous content", self.path.name, exc)
            return self._value


class Stats:
    """Request accounting, persisted to stats.json after every counted request (it survives router restarts)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        previous: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(path.read_text(encoding="utf-8"))
        self.request_count = int(previous.get("request_count", 0))
        self.last_request_at: str | None = previous.get("last_request_at")
        self.per_deployment: dict[str, int] = dict(previous.get("per_deployment", {}))
        self.per_status: dict[str, int] = dict(previous.get("per_status", {}))

    def record(self, deployment: str | None, status: int) -> None:
        with self._lock:
            self.request_count += 1
            self.last_request_at = datetime.now(UTC).isoformat()
            if deployment:
                self.per_deployment[deployment] = self.per_deployment.get(deployment, 0) + 1
            self.per_status[str(status)] = self.per_status.get(str(status), 0) + 1
            snapshot = {
                "request_count": self.request_count,
                "last_request_at": self.last_request_at,
                "per_deployment": self.per_deployment,
                "per_status": self.per_status,
            }
            try:
                write_json_atomically(self.path, snapshot, durable=False)
            except OSError as exc:  # the endpoint folder was removed under us: nothing to account to
                logger.warning("could not write %s: %s", self.path.name, exc)
