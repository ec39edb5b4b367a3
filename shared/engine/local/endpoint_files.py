"""The local endpoints' files (the layout endpoints.py documents): names checked, folders found, one lock per
endpoint, endpoint.json read and written atomically, the keys made once, and an endpoint's info from its files."""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.adapters.files import write_json_atomically
from shared.domain.clock import utc_now
from shared.domain.naming import is_resource_name
from shared.engine.base import EndpointInfo, EndpointKeys
from shared.engine.local.endpoint_errors import EndpointNotFound, InvalidName
from shared.engine.local.serving.router import ENDPOINT_FILE, KEYS_FILE, STATS_FILE


def now_text() -> str:
    return utc_now().isoformat()


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def check_name(name: str, kind: str) -> None:
    if not isinstance(name, str) or not is_resource_name(name):
        raise InvalidName(
            f"invalid {kind} name {name!r}: 3-32 letters, digits or hyphens, starting with a letter, "
            "not ending with a hyphen"
        )


class EndpointFiles:
    """The endpoints under `root` (<state>/endpoints)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        check_name(name, "endpoint")
        return self.root / name

    def existing(self, name: str) -> Path | None:
        if not isinstance(name, str) or not is_resource_name(name):
            return None
        folder = self.root / name
        return folder if (folder / ENDPOINT_FILE).exists() else None

    def required(self, name: str) -> Path:
        folder = self.existing(name)
        if folder is None:
            raise EndpointNotFound(f"endpoint {name} does not exist")
        return folder

    def remembered_port(self, name: str) -> int | None:
        """The port the endpoint had before (kept when it is deleted): a restored endpoint keeps its scoring URI."""
        try:
            return int((self.root / f".{name}.port").read_text())
        except (OSError, ValueError):
            return None

    def remember_port(self, name: str, port: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / f".{name}.port").write_text(str(port))

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Serializes changes to one endpoint across threads and processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{name}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def read(folder: Path) -> dict[str, Any] | None:
        try:
            value = json.loads((folder / ENDPOINT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @staticmethod
    def write(folder: Path, config: dict[str, Any]) -> None:
        write_json_atomically(folder / ENDPOINT_FILE, config, durable=True)

    @staticmethod
    def ensure_keys(folder: Path) -> None:
        path = folder / KEYS_FILE
        if path.exists():
            return
        keys = {"primary": secrets.token_urlsafe(32), "secondary": secrets.token_urlsafe(32)}
        write_json_atomically(path, keys, mode=0o600, durable=True)

    def keys(self, name: str) -> EndpointKeys:
        folder = self.required(name)
        try:
            keys = json.loads((folder / KEYS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EndpointNotFound(f"endpoint {name} has no keys") from exc
        return EndpointKeys(primary=keys["primary"], secondary=keys["secondary"])

    @staticmethod
    def info(folder: Path, config: dict[str, Any]) -> EndpointInfo:
        stats: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            stats = json.loads((folder / STATS_FILE).read_text(encoding="utf-8"))
        return EndpointInfo(
            name=config.get("name", folder.name),
            scoring_uri=f"http://127.0.0.1:{config['port']}/score" if config.get("port") else None,
            tags=dict(config.get("tags") or {}),
            created_at=parse_time(config.get("created_at")),
            traffic=dict(config.get("traffic") or {}),
            last_request_at=parse_time(stats.get("last_request_at")),
            request_count=int(stats.get("request_count", 0) or 0),
        )
