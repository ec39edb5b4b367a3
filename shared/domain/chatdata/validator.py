"""Streaming validation of a chat-completion JSONL dataset: one pass, bounded memory.

Feed byte chunks; each valid example goes to `on_example(split, line)` as soon as it is checked,
and `finish()` returns the report. The validator does no I/O of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from hashlib import blake2b

import orjson

from shared.domain.chatdata.codes import ErrorCode, WarningCode
from shared.domain.chatdata.examples import (
    CHARS_PER_TOKEN,
    TEMPLATE_TOKENS_PER_MESSAGE,
    ExampleShape,
    check_example,
    valid_example_shape,
)
from shared.domain.chatdata.hashing import BackgroundSha256
from shared.domain.chatdata.lines import LineSplitter, LineTooLong
from shared.domain.chatdata.report import ReportedProblem, SplitCounts, ValidationReport
from shared.domain.chatdata.stats import Distribution

MIN_TRAIN_ROWS = 10  # chat_completion_pipeline refuses fewer training samples
_loads = orjson.loads  # a global, not an attribute lookup, once per line


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"


@dataclass(frozen=True)
class ValidationOptions:
    test_fraction: float = 0.1
    max_line_bytes: int = 1 << 20
    max_listed_problems: int = 100
    max_seq_length: int = 2048
    max_invalid_fraction: float = 0.0
    min_train_rows: int = MIN_TRAIN_ROWS
    # Duplicate detection remembers this many distinct conversations and prompt ids (about 110 bytes each),
    # so memory stays bounded on any file; past it, the report says the check was partial.
    duplicate_check_rows: int = 400_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.max_invalid_fraction < 1.0:
            raise ValueError(f"max_invalid_fraction must be in [0, 1), got {self.max_invalid_fraction}")
        if self.max_line_bytes < 1 or self.max_listed_problems < 0 or self.max_seq_length < 1:
            raise ValueError("max_line_bytes and max_seq_length must be positive, max_listed_problems not negative")


ExampleSink = Callable[[Split, bytes], None]


def split_of(key: bytes, test_fraction: float) -> Split:
    """Deterministic split: the same key lands in the same split on every machine, run and Python version."""
    return Split.TEST if _bucket(key) < _test_threshold(test_fraction) else Split.TRAIN


def _bucket(key: bytes) -> int:
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big")


def _test_threshold(test_fraction: float) -> int:
    return int(test_fraction * 2**64)


class DatasetValidator:
    def __init__(self, options: ValidationOptions | None = None, on_example: ExampleSink | None = None) -> None:
        self.options = options or ValidationOptions()
        self._on_example = on_example
        self._lines = LineSplitter(self.options.max_line_bytes)
        self._sha256 = BackgroundSha256()
        self._bytes = 0
        self._rows = 0
        self._line_count = 0
        self._invalid_lines: list[int] = []
        self._error_counts: dict[str, int] = {}
        self._warning_counts: dict[str, int] = {}
        self._errors: list[ReportedProblem] = []
        self._warnings: list[ReportedProblem] = []
        self._train_rows = 0
        self._test_rows = 0
        self._test_threshold_bytes = _test_threshold(self.options.test_fraction).to_bytes(8, "big")
        self._split_hasher = blake2b(digest_size=8)  # copied per row: cheaper than a new one with its keywords
        self._conversations: dict[int, int] = {}  # fingerprint -> first line
        self._prompt_ids: dict[int, int] = {}
        self._duplicate_check_saturated = False
        # {value: occurrences} per measure of valid examples: exact percentiles in bounded memory
        self._messages: Counter[int] = Counter()
        self._turns: Counter[int] = Counter()
        self._characters: Counter[int] = Counter()
        self._tokens: Counter[int] = Counter()
        self._assistant_characters: Counter[int] = Counter()
        self._assistant_tokens: Counter[int] = Counter()
        self._over_max_seq = 0
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        self._bytes += len(chunk)
        self._check_lines(self._lines.feed(chunk))

    def finish(self) -> ValidationReport:
        if self._finished:
            raise RuntimeError("finish() was already called")
        self._finished = True
        self._check_lines(self._lines.finish())
        return self._report()

    # -- per line -------------------------------------------------------------------------------

    # The hot path of the whole app, once per line of multi-GB files (see benchmarks/): one loop over a
    # chunk's lines with everything it needs in local variables, plain dict operations, and helpers only
    # for what is rare (problems, warnings) and for the duplicate check (one call a key).
    def _check_lines(self, lines: list[bytes | LineTooLong]) -> None:
        first = self._line_count + 1
        self._line_count += len(lines)
        options = self.options
        max_line_bytes = options.max_line_bytes
        max_seq_length = options.max_seq_length
        duplicate_check_rows = options.duplicate_check_rows
        strict = self._strict
        emit = None if self._invalid_lines and strict else self._on_example
        conversations = self._conversations
        prompt_ids = self._prompt_ids
        split_hasher = self._split_hasher
        test_threshold = self._test_threshold_bytes
        train, test = Split.TRAIN, Split.TEST  # an enum member costs a metaclass lookup each time
        shapes: list[ExampleShape] = []  # of the valid examples, counted into the stats once per batch
        keep_shape = shapes.append
        first_seen = self._first_seen
        try:
            for line_no, line in enumerate(lines, first):
                if type(line) is LineTooLong or len(line) > max_line_bytes:
                    self._rows += 1
                    length = line.length if type(line) is LineTooLong else len(line)
                    self._line_invalid(
                        line_no, [(ErrorCode.LINE_TOO_LONG, f"{length} bytes; the limit is {max_line_bytes}")]
                    )
                    emit = None if strict else emit
                    continue
                if not line or line.isspace():
                    self._warn(line_no, WarningCode.BLANK_LINE, "blank line ignored")
                    continue
                self._rows += 1
                try:
                    row = _loads(line)
                except orjson.JSONDecodeError as exc:
                    self._line_invalid(line_no, [_parse_problem(line, exc)])
                    emit = None if strict else emit
                    continue
                shape = valid_example_shape(row)
                if shape is None:
                    problems, shape = check_example(row)
                    if problems:
                        self._line_invalid(line_no, [(p.code, p.message) for p in problems])
                        emit = None if strict else emit
                        continue
                    assert shape is not None  # check_example gives the shape of a row without problems
                keep_shape(shape)
                tokens = shape[3]
                if tokens > max_seq_length:
                    self._over_max_seq += 1
                    self._warn(
                        line_no,
                        WarningCode.EXCEEDS_MAX_SEQ_LENGTH,
                        f"about {tokens} tokens; max_seq_length is {max_seq_length}, so it will be truncated",
                    )
                earlier = first_seen(conversations, shape[6], line_no, duplicate_check_rows)  # 6: the fingerprint
                if earlier != line_no:
                    self._warn(line_no, WarningCode.DUPLICATE_CONVERSATION, f"same conversation as line {earlier}")
                prompt_id = row.get("prompt_id")
                if type(prompt_id) is str and prompt_id:
                    split_key = prompt_id.encode()
                    earlier = first_seen(prompt_ids, hash(prompt_id), line_no, duplicate_check_rows)
                    if earlier != line_no:
                        self._warn(
                            line_no, WarningCode.DUPLICATE_PROMPT_ID, f"prompt_id already used on line {earlier}"
                        )
                else:
                    split_key = orjson.dumps(row["messages"], option=orjson.OPT_SORT_KEYS)
                # split_of(split_key), without the int: 8 big-endian bytes compare as the number they spell
                hasher = split_hasher.copy()
                hasher.update(split_key)
                if hasher.digest() < test_threshold:
                    split = test
                    self._test_rows += 1
                else:
                    split = train
                    self._train_rows += 1
                if emit is not None:
                    emit(split, line[:-1] if line[-1] == 13 else line)  # 13: b"\r", of a CRLF file
        finally:
            self._count(shapes)

    def _count(self, shapes: list[ExampleShape]) -> None:
        if shapes:
            messages, turns, characters, tokens, assistant_characters, assistant_tokens, _ = zip(*shapes, strict=True)
            # Counter.update counts in C, cheaper than six dict updates a row in the loop
            self._messages.update(messages)
            self._turns.update(turns)
            self._characters.update(characters)
            self._tokens.update(tokens)
            self._assistant_characters.update(assistant_characters)
            self._assistant_tokens.update(assistant_tokens)

    def _first_seen(self, seen: dict[int, int], key: int, line_no: int, limit: int) -> int:
        """The line the key was first seen on; line_no when it is new. Past `limit` keys a new key is not
        remembered, and the duplicate check is marked partial.

        setdefault() looks a key up once where get() then a store look it up twice, in dicts that grow to
        hundreds of thousands of keys (a cache miss each).
        """
        if len(seen) < limit:
            return seen.setdefault(key, line_no)
        earlier = seen.get(key, line_no)
        if earlier == line_no:
            self._duplicate_check_saturated = True
        return earlier

    @property
    def _strict(self) -> bool:
        return self.options.max_invalid_fraction == 0.0

    def _line_invalid(self, line_no: int, problems: list[tuple[str, str]]) -> None:
        self._invalid_lines.append(line_no)
        for code, message in problems:
            self._error_counts[code] = self._error_counts.get(code, 0) + 1
            if len(self._errors) < self.options.max_listed_problems:
                self._errors.append(ReportedProblem(line=line_no, code=code, message=message))

    def _warn(self, line_no: int, code: WarningCode, message: str) -> None:
        self._warning_counts[code] = self._warning_counts.get(code, 0) + 1
        if len(self._warnings) < self.options.max_listed_problems:
            self._warnings.append(ReportedProblem(line=line_no, code=code, message=message))

    # -- whole dataset --------------------------------------------------------------------------

    def _report(self) -> ValidationReport:
        options = self.options
        train = self._train_rows
        dataset_errors: list[ReportedProblem] = []
        if self._rows == 0:
            dataset_errors.append(
                ReportedProblem(line=None, code=ErrorCode.EMPTY_DATASET, message="the file holds no examples")
            )
        elif train < options.min_train_rows:
            dataset_errors.append(
                ReportedProblem(
                    line=None,
                    code=ErrorCode.TOO_FEW_EXAMPLES,
                    message=f"{train} valid training examples; fine-tuning needs at least {options.min_train_rows}",
                )
            )
        for problem in dataset_errors:
            self._error_counts[problem.code] = self._error_counts.get(problem.code, 0) + 1
        invalid = len(self._invalid_lines)
        tolerated = invalid <= options.max_invalid_fraction * self._rows
        valid = not dataset_errors and (invalid == 0 or (not self._strict and tolerated))
        return ValidationReport(
            valid=valid,
            rows=self._rows,
            sha256=self._sha256.hexdigest(),
            error_counts=dict(sorted(self._error_counts.items())),
            errors=(dataset_errors + self._errors)[: options.max_listed_problems],
            warnings=self._warnings,
            stats=self._stats(),
            split=SplitCounts(train=train, test=self._test_rows),
            warning_counts=dict(sorted(self._warning_counts.items())),
            dropped_lines=list(self._invalid_lines) if valid else [],
        )

    def _stats(self) -> dict:
        return {
            "bytes": self._bytes,
            "examples": {
                "messages": Distribution(self._messages).summary(),
                "turns": Distribution(self._turns).summary(),
                "characters": Distribution(self._characters).summary(),
                "estimated_tokens": Distribution(self._tokens).summary(),
            },
            "assistant": {
                "characters": Distribution(self._assistant_characters).summary(),
                "estimated_tokens": Distribution(self._assistant_tokens).summary(),
            },
            "max_seq_length": self.options.max_seq_length,
            "exceeds_max_seq_length": self._over_max_seq,
            "token_estimate": (
                f"{CHARS_PER_TOKEN} characters a token, "
                f"plus {TEMPLATE_TOKENS_PER_MESSAGE} a message for the chat template"
            ),
            "duplicate_check": (
                f"partial: only the first {self.options.duplicate_check_rows} distinct keys were remembered"
                if self._duplicate_check_saturated
                else "complete"
            ),
        }


def _parse_problem(line: bytes, exc: orjson.JSONDecodeError) -> tuple[str, str]:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return ErrorCode.INVALID_UTF8, f"byte {bad.start + 1} is not valid UTF-8"
    return ErrorCode.INVALID_JSON, f"not valid JSON: {exc.msg} at character {exc.pos + 1}"


def validate_chunks(
    chunks: Iterable[bytes], options: ValidationOptions | None = None, on_example: ExampleSink | None = None
) -> ValidationReport:
    validator = DatasetValidator(options, on_example)
    for chunk in chunks:
        validator.feed(chunk)
    return validator.finish()
