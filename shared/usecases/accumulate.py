"""Accumulating lines: an upload trains on the union of all the line's valid uploads so far.

The union is read from the uploads themselves (each pinned to the ETag its run recorded), deduplicated by
`prompt_id`, then by the conversation's hash. The split stays keyed on `prompt_id`, so a conversation held out once
is held out in every later union. Which uploads a run used, and how many rows each gave, is recorded on the run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from shared.context import AppContext
from shared.domain.errors import AutopilotError
from shared.domain.runs import DatasetRef, RunState, UploadUsed

logger = logging.getLogger(__name__)


@dataclass
class Union:
    """The line's uploads to read, in upload order; `used` is filled in as they are read."""

    uploads: list[DatasetRef]
    used: list[UploadUsed] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # uploads that could no longer be read as they were


def line_uploads(ctx: AppContext, line: str, current: DatasetRef) -> Union:
    """The valid uploads of the line recorded so far that were uploaded before this one, then this one.

    Only earlier uploads count, so a redelivery of this upload, however late, makes the same union (the same run id)
    instead of a new run that also holds what came after it."""
    mine = _upload_order(current, current.uploaded_at)
    earlier: dict[tuple[str, str, str | None], DatasetRef] = {}
    for record in sorted(ctx.ledger.list(line=line, limit=100_000), key=lambda r: r.order):
        ref = record.dataset
        if record.validation is None or not record.validation.valid or record.state == RunState.REJECTED:
            continue
        if _upload_order(ref, ref.uploaded_at or record.created_at) < mine:
            earlier.setdefault((ref.container, ref.blob, ref.etag), ref)
    return Union(uploads=[*earlier.values(), current])


def _upload_order(ref: DatasetRef, at: datetime | None) -> tuple[datetime, str]:
    return (at or datetime.min.replace(tzinfo=UTC), f"{ref.container}/{ref.blob}")


def union_lines(ctx: AppContext, union: Union) -> Iterator[bytes]:
    """Every line of the uploads, each conversation once (the first upload that has it keeps it)."""
    seen: set[bytes] = set()
    for upload in union.uploads:
        rows = 0
        try:
            for line in ctx.store.iter_lines(upload.container, upload.blob, etag=upload.etag):
                key = _conversation_key(line)
                if key is not None:
                    if key in seen:
                        continue
                    seen.add(key)
                rows += 1
                yield line + b"\n"
        except AutopilotError as exc:  # overwritten or deleted since: its rows are not in this union
            logger.warning("upload %s/%s left out of the union: %s", upload.container, upload.blob, exc.message)
            union.skipped.append(f"{upload.container}/{upload.blob}")
            continue
        union.used.append(UploadUsed(blob=f"{upload.container}/{upload.blob}", rows=rows))


def _conversation_key(line: bytes) -> bytes | None:
    """`prompt_id`, else the hash of the messages; None for a line that does not parse (the validator judges it)."""
    try:
        example = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(example, dict):
        return None
    prompt_id = example.get("prompt_id")
    if isinstance(prompt_id, str) and prompt_id:
        return b"p:" + prompt_id.encode()
    return b"m:" + hashlib.sha256(orjson.dumps(example.get("messages"), option=orjson.OPT_SORT_KEYS)).digest()
