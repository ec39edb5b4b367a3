"""Local files written whole or not at all: the engine's job files, the router's configuration and statistics, the
dev host's blob receipts."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomically(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = False) -> None:
    """Write to a temporary file in the same folder, then rename over `path`: readers see the old content or the
    new, never half. `durable` also fsyncs the file before the rename (for what must survive a power loss)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_json_atomically(path: Path, payload: Any, mode: int = 0o644, *, durable: bool = False) -> None:
    write_atomically(path, json.dumps(payload, indent=2, sort_keys=True).encode(), mode, durable=durable)
