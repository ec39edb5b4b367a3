"""Dataset validation as a use case: the options the settings give, and a report for bytes in hand."""

from __future__ import annotations

from shared.domain.chatdata import (
    ValidationOptions,
    ValidationReport,
    validate_chunks,
)
from shared.domain.errors import InvalidInput
from shared.domain.finetune import FineTuneParameters
from shared.settings import Settings

BODY_CHUNK_BYTES = 4 * 1024 * 1024


def validation_options(
    settings: Settings, *, test_fraction: float | None = None, parameters: FineTuneParameters | None = None
) -> ValidationOptions:
    return ValidationOptions(
        test_fraction=settings.test_fraction if test_fraction is None else test_fraction,
        max_line_bytes=settings.max_line_bytes,
        max_listed_problems=settings.max_listed_problems,
        max_seq_length=(parameters or FineTuneParameters()).max_seq_length,
        max_invalid_fraction=settings.max_invalid_fraction,
    )


def validate_bytes(settings: Settings, body: bytes, *, test_fraction: float | None = None) -> ValidationReport:
    """Validate a dataset held in memory (an HTTP body); nothing is stored."""
    try:
        options = validation_options(settings, test_fraction=test_fraction)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    view = memoryview(body)
    chunks = (bytes(view[i : i + BODY_CHUNK_BYTES]) for i in range(0, len(view), BODY_CHUNK_BYTES))
    return validate_chunks(chunks, options)
