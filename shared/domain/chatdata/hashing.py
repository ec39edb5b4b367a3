"""SHA-256 of a byte stream, computed beside the caller's work.

hashlib releases the GIL on large buffers, so hashing chunk N on a helper thread while the caller
parses chunk N costs almost no wall time on a machine with a second core.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor


class BackgroundSha256:
    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: Future[None] | None = None

    def update(self, chunk: bytes) -> None:
        """Queue a chunk; at most one chunk is in flight, so memory stays at two chunks."""
        self._wait()
        self._pending = self._executor.submit(self._sha.update, chunk)

    def hexdigest(self) -> str:
        self._wait()
        self._executor.shutdown(wait=True)
        return self._sha.hexdigest()

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
