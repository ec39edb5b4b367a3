"""Split a stream of byte chunks into lines with bounded memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

UTF8_BOM = b"\xef\xbb\xbf"


@final  # so that `type(line) is not LineTooLong` narrows a line to bytes
@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Stands in for a line longer than the limit, whose bytes were never buffered."""

    length: int


class LineSplitter:
    """Feed chunks, get the lines they complete, in order, without their newline.

    Only a line that spans chunks is buffered, and never past `max_line_bytes`: it becomes a
    `LineTooLong` while it streams past. A line inside one chunk is returned as it is; callers check
    its length themselves (a length test is cheaper than re-slicing every line of a multi-GB file).
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._head: bytes | None = b""  # the stream's first bytes, until a UTF-8 BOM is ruled in or out
        self._bom_alone = False  # nothing but a BOM so far: still one (empty) line 1

    def feed(self, chunk: bytes) -> list[bytes | LineTooLong]:
        if self._head is not None:
            chunk = self._head + chunk
            if len(chunk) < len(UTF8_BOM) and UTF8_BOM.startswith(chunk):
                self._head = chunk
                return []
            self._head = None
            if chunk.startswith(UTF8_BOM):  # before any length is counted: a BOM is not part of line 1
                chunk = chunk[len(UTF8_BOM) :]
                self._bom_alone = not chunk
        # A find() loop, not chunk.split(b"\n"): find() scans with memchr, split() byte by byte, which
        # made it twice as slow on multi-MB chunks.
        lines: list[bytes | LineTooLong] = []
        append = lines.append
        find = chunk.find
        start = 0
        if self._pending_len and (end := find(b"\n")) >= 0:  # the first newline ends the line held so far
            append(self._take_pending(chunk[:end]))
            start = end + 1
        while (end := find(b"\n", start)) >= 0:
            append(chunk[start:end])
            start = end + 1
        tail = chunk[start:]
        if chunk:
            self._bom_alone = False
        self._hold(tail)
        return lines

    def finish(self) -> list[bytes | LineTooLong]:
        """The last line, when the input does not end with a newline."""
        if self._head:  # a stream of one or two bytes that began like a BOM: they are content
            self._hold(self._head)
        self._head = None
        if self._bom_alone:
            return [b""]
        return [self._take_pending(b"")] if self._pending_len else []

    def _hold(self, part: bytes) -> None:
        if not part:
            return
        if self._pending_len <= self._max:
            self._pending.append(part)
        self._pending_len += len(part)
        if self._pending_len > self._max:
            self._pending.clear()

    def _take_pending(self, end: bytes) -> bytes | LineTooLong:
        self._hold(end)
        length = self._pending_len
        line = LineTooLong(length) if length > self._max else b"".join(self._pending)
        self._pending.clear()
        self._pending_len = 0
        return line
