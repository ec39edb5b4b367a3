"""Train/test lines collected during validation: in memory while small, in temporary files past that.

`add` runs once per line of multi-GB files, so lines are batched a megabyte at a time and written by a helper
thread (file writes release the GIL, so they overlap the validation), and the split is told apart by identity
(hashing an enum member in a dict costs a Python-level call).
"""

from __future__ import annotations

import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

from shared.domain.chatdata import Split

IN_MEMORY_BYTES = 8 * 1024 * 1024
FLUSH_BYTES = 1024 * 1024


class _Buffered:
    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115 (closed by SplitSpool)
        self.lines: list[bytes] = []
        self.size = 0


class SplitSpool:
    def __init__(self) -> None:
        self._train = _Buffered()
        self._test = _Buffered()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._writing: Future[int] | None = None  # at most one batch in flight: memory stays bounded

    def add(self, split: Split, line: bytes) -> None:
        buffered = self._test if split is Split.TEST else self._train
        buffered.lines.append(line)
        buffered.size += len(line)
        if buffered.size > FLUSH_BYTES:
            self._flush(buffered)

    def rewound(self, split: Split) -> IO[bytes]:
        buffered = self._test if split is Split.TEST else self._train
        self._flush(buffered)
        self._wait()
        buffered.file.seek(0)
        return buffered.file

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._train.file.close()
        self._test.file.close()

    def _flush(self, buffered: _Buffered) -> None:
        if not buffered.lines:
            return
        buffered.lines.append(b"")  # the last line's newline
        batch = b"\n".join(buffered.lines)
        buffered.lines.clear()
        buffered.size = 0
        self._wait()
        self._writing = self._writer.submit(buffered.file.write, batch)

    def _wait(self) -> None:
        if self._writing is not None:
            self._writing.result()
            self._writing = None

    def __enter__(self) -> SplitSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
