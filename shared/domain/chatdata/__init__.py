"""Pure, streaming validation of chat-completion JSONL datasets: checks, stats, split, hashing."""

from shared.domain.chatdata.codes import ErrorCode, WarningCode
from shared.domain.chatdata.report import ReportedProblem, ValidationReport, combine_train_test, render_markdown
from shared.domain.chatdata.validator import (
    MIN_TRAIN_ROWS,
    DatasetValidator,
    Split,
    ValidationOptions,
    split_of,
    validate_chunks,
)

__all__ = [
    "MIN_TRAIN_ROWS",
    "DatasetValidator",
    "ErrorCode",
    "ReportedProblem",
    "Split",
    "ValidationOptions",
    "ValidationReport",
    "WarningCode",
    "combine_train_test",
    "render_markdown",
    "split_of",
    "validate_chunks",
]
