"""Train/test lines collected during validation: in memory while small, in temporary files past that."""

from __future__ import annotations

import tempfile
from typing import IO

from shared.chatdata import Split

IN_MEMORY_BYTES = 8 * 1024 * 1024


class SplitSpool:
    def __init__(self) -> None:
        self._files = {
            split: tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115 (closed by close())
            for split in Split
        }

    def add(self, split: Split, line: bytes) -> None:
        file = self._files[split]
        file.write(line)
        file.write(b"\n")

    def rewound(self, split: Split) -> IO[bytes]:
        file = self._files[split]
        file.seek(0)
        return file

    def close(self) -> None:
        for file in self._files.values():
            file.close()

    def __enter__(self) -> SplitSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
