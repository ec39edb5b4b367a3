"""Run records, one JSON blob per run, updated with ETag optimistic concurrency.

Layout in the runs container:
  records/<run_id>.json     the RunRecord
  receipts/<key>.json       "this upload (name + ETag) was already handled as run X": a fast path for redeliveries
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator

import orjson

from shared.adapters.storage import BlobNotFound, BlobStore, ETagMismatch
from shared.domain.errors import ConcurrentUpdate, RunNotFound
from shared.domain.runs import RunRecord, RunState

logger = logging.getLogger(__name__)

RECORDS = "records/"
RECEIPTS = "receipts/"
MAX_WRITE_ATTEMPTS = 50

# A change function returns the new record, or None when there is nothing to change.
RecordChange = Callable[[RunRecord], RunRecord | None]
# Told of every transition a `transition` call made (the record before, and after): notifications hang here.
TransitionHook = Callable[[RunRecord, RunRecord], None]


class RunLedger:
    def __init__(self, store: BlobStore, container: str, on_transition: TransitionHook | None = None) -> None:
        self._store = store
        self._container = container
        self.on_transition = on_transition

    def ensure_ready(self) -> None:
        self._store.ensure_container(self._container)

    def get(self, run_id: str) -> RunRecord:
        return self._read(run_id)[0]

    def find(self, run_id: str) -> RunRecord | None:
        try:
            return self.get(run_id)
        except RunNotFound:
            return None

    def create(self, record: RunRecord) -> tuple[RunRecord, bool]:
        """Store a new record, or return the existing one unchanged; the bool says whether this call created it."""
        try:
            self._store.write(
                self._container,
                _record_blob(record.run_id),
                _encode(record),
                if_absent=True,
                content_type="application/json",
            )
            logger.info("run %s created", record.run_id, extra={"run_id": record.run_id})
            return record, True
        except ETagMismatch:
            return self.get(record.run_id), False

    def update(self, run_id: str, change: RecordChange) -> RunRecord:
        """Apply `change` to the latest record and write it only if nobody wrote in between; retry otherwise.

        `change` may run several times, so it must be a pure function of the record it is given.
        """
        for attempt in range(MAX_WRITE_ATTEMPTS):
            current, etag = self._read(run_id)
            changed = change(current)
            if changed is None or changed == current:
                return current
            try:
                self._store.write(
                    self._container,
                    _record_blob(run_id),
                    _encode(changed),
                    if_match=etag,
                    content_type="application/json",
                )
                return changed
            except ETagMismatch:
                logger.debug("run %s: concurrent update, retrying (%d)", run_id, attempt + 1, extra={"run_id": run_id})
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise ConcurrentUpdate(f"run {run_id}: gave up after {MAX_WRITE_ATTEMPTS} conflicting writes")

    def transition(self, run_id: str, change: RecordChange) -> RunRecord:
        """The one write path for state changes: `update`, then the hook when this call moved the run to another
        state (a duplicate or late delivery that changes nothing announces nothing)."""
        moved: list[RunRecord] = []

        def tracked(record: RunRecord) -> RunRecord | None:
            changed = change(record)
            moved[:] = [record] if changed is not None and changed.state != record.state else []
            return changed

        after = self.update(run_id, tracked)
        if moved and self.on_transition is not None:
            self.on_transition(moved[0], after)
        return after

    def list(self, *, state: RunState | None = None, limit: int = 100) -> list[RunRecord]:
        """Records, newest first, optionally of one state."""
        records = [record for record in self._all() if state is None or record.state == state]
        records.sort(key=lambda record: record.created_at, reverse=True)
        return records[:limit]

    def receipt(self, key: str) -> str | None:
        """The run id recorded for an upload key (container/name@etag), if any."""
        try:
            data, _ = self._store.read(self._container, _receipt_blob(key))
        except BlobNotFound:
            return None
        return orjson.loads(data)["run_id"]

    def add_receipt(self, key: str, run_id: str) -> None:
        body = orjson.dumps({"key": key, "run_id": run_id})
        self._store.write(self._container, _receipt_blob(key), body, content_type="application/json")

    def _all(self) -> Iterator[RunRecord]:
        for name in self._store.list_names(self._container, RECORDS):
            try:
                data, _ = self._store.read(self._container, name)
            except BlobNotFound:
                continue  # deleted while listing
            yield RunRecord.model_validate_json(data)

    def _read(self, run_id: str) -> tuple[RunRecord, str]:
        try:
            data, etag = self._store.read(self._container, _record_blob(run_id))
        except BlobNotFound as exc:
            raise RunNotFound(f"no run {run_id}") from exc
        return RunRecord.model_validate_json(data), etag


def _record_blob(run_id: str) -> str:
    return f"{RECORDS}{run_id}.json"


def _receipt_blob(key: str) -> str:
    return f"{RECEIPTS}{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"


def _encode(record: RunRecord) -> bytes:
    return orjson.dumps(record.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2)
