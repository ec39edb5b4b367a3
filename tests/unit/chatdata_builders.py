"""Builders of chat-completion JSONL for the shared.domain.chatdata tests: plain values, no fixtures."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.domain.chatdata import Split, ValidationOptions, ValidationReport, validate_chunks


def message(role: object, content: object, **extra: object) -> dict:
    return {"role": role, "content": content, **extra}


def conversation(user: str = "Hello?", assistant: str = "Hi there.", system: str | None = None) -> list[dict]:
    head = [message("system", system)] if system is not None else []
    return [*head, message("user", user), message("assistant", assistant)]


def line(messages: object, **extra: object) -> bytes:
    """One JSONL row (without its newline) holding `messages` and any extra top-level keys."""
    return json.dumps({"messages": messages, **extra}, ensure_ascii=False).encode()


def valid_line(index: int, **extra: object) -> bytes:
    """A valid row whose conversation differs from every other index (so no duplicate warnings)."""
    return line(conversation(f"Question {index}?", f"Answer {index}."), **extra)


def valid_lines(count: int, start: int = 0) -> list[bytes]:
    return [valid_line(index) for index in range(start, start + count)]


def jsonl(lines: Iterable[bytes], newline: bytes = b"\n") -> bytes:
    """The file: every line followed by `newline`."""
    return b"".join(row + newline for row in lines)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)] or [b""]


def line_count(data: bytes) -> int:
    """How many lines a reader sees: one per newline, plus a last one without its newline."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@dataclass
class Outcome:
    report: ValidationReport
    emitted: list[tuple[Split, bytes]] = field(default_factory=list)

    @property
    def emitted_lines(self) -> list[bytes]:
        return [row for _, row in self.emitted]

    @property
    def problems(self) -> list[tuple[int | None, str]]:
        return [(problem.line, problem.code) for problem in self.report.errors]

    @property
    def warnings(self) -> list[tuple[int | None, str]]:
        return [(problem.line, problem.code) for problem in self.report.warnings]

    @property
    def invalid_lines(self) -> set[int]:
        """Lines with at least one listed error (complete when max_listed_problems is large enough)."""
        return {problem.line for problem in self.report.errors if problem.line is not None}


def validate(data: bytes, options: ValidationOptions | None = None, chunk_size: int | None = None) -> Outcome:
    """Validate `data` fed in chunks of `chunk_size` bytes (one chunk when None), keeping what is emitted."""
    emitted: list[tuple[Split, bytes]] = []
    chunks = [data] if chunk_size is None else chunked(data, chunk_size)
    report = validate_chunks(chunks, options, on_example=lambda split, row: emitted.append((split, row)))
    return Outcome(report, emitted)
