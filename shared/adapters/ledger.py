"""Run records, one JSON blob per run, updated with ETag optimistic concurrency.

Layout in the runs container:
  records/<run_id>.json     the RunRecord
  kept/<run_id>.json        the last version of it that was written whole: what `autopilot runs repair` restores
  receipts/<key>.json       "this upload (name + ETag) was already handled as run X": a fast path for redeliveries
  index/...                 which runs are in which state and line (run_index.py): listings by state or line read
                            only those runs

A record that does not parse is contained: reading it raises RecordUnreadable (one run's trouble), and listings
skip it and name it in `RunListing.unreadable`, so one damaged blob never stops the API or the sweep.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from shared.adapters.run_index import RunIndex
from shared.adapters.storage import BlobNotFound, BlobStore, ETagMismatch
from shared.domain.errors import AutopilotError, ConcurrentUpdate, RecordUnreadable, RunNotFound
from shared.domain.runs import RunRecord, RunState

logger = logging.getLogger(__name__)

RECORDS = "records/"
KEPT = "kept/"
RECEIPTS = "receipts/"
MAX_WRITE_ATTEMPTS = 50
REBUILD_READERS = 8

# A change function returns the new record, or None when there is nothing to change.
RecordChange = Callable[[RunRecord], RunRecord | None]
# Told of every transition a `transition` call made (the record before, and after): notifications hang here.
TransitionHook = Callable[[RunRecord, RunRecord], None]


@dataclass(frozen=True)
class UnreadableRecord:
    run_id: str
    blob: str
    error: str  # why it does not parse, in one line


@dataclass(frozen=True)
class RunListing:
    records: list[RunRecord]
    unreadable: list[UnreadableRecord] = field(default_factory=list)


@dataclass(frozen=True)
class DamagedRecord:
    """What `repair` shows: the stored bytes as they are, why they do not parse, and the kept copy if any."""

    run_id: str
    raw: bytes
    etag: str
    error: str | None  # None: the record parses, nothing to repair
    kept: RunRecord | None


class RunLedger:
    def __init__(self, store: BlobStore, container: str, on_transition: TransitionHook | None = None) -> None:
        self._store = store
        self._container = container
        self.on_transition = on_transition
        self.index = RunIndex(store, container)
        self._index_complete = False

    def ensure_ready(self) -> None:
        self._store.ensure_container(self._container)
        self.ensure_index()

    def get(self, run_id: str) -> RunRecord:
        return self._read(run_id)[0]

    def find(self, run_id: str) -> RunRecord | None:
        try:
            return self.get(run_id)
        except RunNotFound:
            return None

    def create(self, record: RunRecord) -> tuple[RunRecord, bool]:
        """Store a new record, or return the existing one unchanged; the bool says whether this call created it."""
        self.index.mark(record)  # before the record: a record never lacks its markers
        try:
            self._store.write(
                self._container,
                _record_blob(record.run_id),
                _encode(record),
                if_absent=True,
                content_type="application/json",
            )
            self._keep(record)
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
            moves = changed.state != current.state
            if moves:
                self.index.mark_state(changed)
            try:
                self._store.write(
                    self._container,
                    _record_blob(run_id),
                    _encode(changed),
                    if_match=etag,
                    content_type="application/json",
                )
                if moves:
                    self.index.unmark_state(current.state, run_id)
                self._keep(changed)
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

    def list(
        self,
        *,
        states: Collection[RunState] | None = None,
        line: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Records, newest first, optionally of some states and one line; unreadable ones are left out (`listing`)."""
        return self.listing(states=states, line=line, limit=limit).records

    def listing(
        self,
        *,
        states: Collection[RunState] | None = None,
        line: str | None = None,
        limit: int = 100,
    ) -> RunListing:
        """Records, newest first, optionally of some states and one line, and the records that could not be read.
        With a filter and a complete index, only the runs its markers name are read."""
        wanted = set(states or ())
        marked: dict[str, set[RunState]] = {}  # from the index: the states each run's markers name
        if (wanted or line is not None) and self._indexed():
            marked = self.index.run_ids(states=wanted or None, line=line)
            names = sorted(_record_blob(run_id) for run_id in marked)
        else:
            names = list(self._store.list_names(self._container, RECORDS))
        records, unreadable = [], []
        for name in names:
            try:
                data, _ = self._store.read(self._container, name)
            except BlobNotFound:
                continue  # deleted while listing
            run_id = name.removeprefix(RECORDS).removesuffix(".json")
            try:
                record = _decode(run_id, data)
            except RecordUnreadable as exc:
                logger.debug("%s", exc.message, extra={"run_id": run_id})
                unreadable.append(UnreadableRecord(run_id=run_id, blob=f"{self._container}/{name}", error=exc.message))
                continue
            if wanted and record.state not in wanted:
                if run_id in marked:
                    self.index.drop_stale(record, marked[run_id])
                continue
            if line is None or record.line == line:
                records.append(record)
        records.sort(key=lambda record: record.created_at, reverse=True)
        return RunListing(records=records[:limit], unreadable=unreadable)

    def ensure_index(self) -> None:
        """Build the index once, for records written before it existed (every write keeps it since)."""
        if not self._indexed():
            self.rebuild_index()

    def rebuild_index(self) -> int:
        """Markers for every readable record, from a full scan read in parallel; returns how many it indexed."""
        names = list(self._store.list_names(self._container, RECORDS))
        with ThreadPoolExecutor(REBUILD_READERS, thread_name_prefix="index-read") as pool:
            records = [record for record in pool.map(self._readable, names) if record is not None]
        count = self.index.rebuild(records)
        self._index_complete = True
        return count

    def _readable(self, name: str) -> RunRecord | None:
        try:
            data, _ = self._store.read(self._container, name)
            return _decode(name.removeprefix(RECORDS).removesuffix(".json"), data)
        except (BlobNotFound, RecordUnreadable):
            return None  # deleted meanwhile, or damaged: `autopilot runs repair`, then the writes index it

    def _indexed(self) -> bool:
        if not self._index_complete:
            self._index_complete = self.index.is_complete()
        return self._index_complete

    def inspect(self, run_id: str) -> DamagedRecord:
        """The stored record as bytes, whether it parses, and the kept copy: what a repair needs to decide."""
        try:
            raw, etag = self._store.read(self._container, _record_blob(run_id))
        except BlobNotFound as exc:
            raise RunNotFound(f"no run {run_id}") from exc
        try:
            _decode(run_id, raw)
            error = None
        except RecordUnreadable as exc:
            error = exc.message
        return DamagedRecord(run_id=run_id, raw=raw, etag=etag, error=error, kept=self._kept(run_id))

    def restore_kept(self, damaged: DamagedRecord) -> RunRecord:
        """Put the kept copy back over the damaged record, only if the record is still the one inspected."""
        if damaged.kept is None:
            raise RunNotFound(f"run {damaged.run_id}: no kept copy to restore", code="kept_copy_not_found")
        self._store.write(
            self._container,
            _record_blob(damaged.run_id),
            _encode(damaged.kept),
            if_match=damaged.etag,
            content_type="application/json",
        )
        logger.warning("run %s: record restored from its kept copy", damaged.run_id, extra={"run_id": damaged.run_id})
        return damaged.kept

    def receipt(self, key: str) -> str | None:
        """The run id recorded for an upload key (container/name@etag), if any. A receipt is only a fast path:
        one that does not parse counts as none, and the upload is handled the slow way."""
        try:
            data, _ = self._store.read(self._container, _receipt_blob(key))
        except BlobNotFound:
            return None
        try:
            return str(orjson.loads(data)["run_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            logger.warning("receipt for %s is unreadable (%s): ignored", key, type(exc).__name__)
            return None

    def add_receipt(self, key: str, run_id: str) -> None:
        body = orjson.dumps({"key": key, "run_id": run_id})
        self._store.write(self._container, _receipt_blob(key), body, content_type="application/json")

    def _read(self, run_id: str) -> tuple[RunRecord, str]:
        try:
            data, etag = self._store.read(self._container, _record_blob(run_id))
        except BlobNotFound as exc:
            raise RunNotFound(f"no run {run_id}") from exc
        return _decode(run_id, data), etag

    def _keep(self, record: RunRecord) -> None:
        """A copy of what was just written whole. Written after the record, so it is never ahead of it; a lost
        copy write leaves the previous good version, which is still a good one to restore."""
        try:
            self._store.write(
                self._container, _kept_blob(record.run_id), _encode(record), content_type="application/json"
            )
        except AutopilotError as exc:
            logger.warning(
                "run %s: kept copy not written: %s", record.run_id, exc.message, extra={"run_id": record.run_id}
            )

    def _kept(self, run_id: str) -> RunRecord | None:
        try:
            data, _ = self._store.read(self._container, _kept_blob(run_id))
            return _decode(run_id, data)
        except (BlobNotFound, RecordUnreadable):
            return None


def _record_blob(run_id: str) -> str:
    return f"{RECORDS}{run_id}.json"


def _kept_blob(run_id: str) -> str:
    return f"{KEPT}{run_id}.json"


def _decode(run_id: str, data: bytes) -> RunRecord:
    try:
        return RunRecord.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"msg": str(exc), "loc": ()}
        where = ".".join(map(str, first["loc"]))
        raise RecordUnreadable(
            f"run {run_id}: its record does not parse ({where + ': ' if where else ''}{first['msg']}, "
            f"{len(data)} bytes); `autopilot runs repair {run_id}` shows it and restores the kept copy"
        ) from exc


def _receipt_blob(key: str) -> str:
    return f"{RECEIPTS}{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"


def _encode(record: RunRecord) -> bytes:
    return orjson.dumps(record.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2)
