"""The run ledger's index: empty marker blobs that say which runs are in which state and line, so the sweep and
the listings read the runs they need instead of every record ever written.

    index/state/<state>/<run_id>    one per run, for the state its record is in
    index/line/<line>/<run_id>      one per run
    index/complete                  every record has its markers (written by `rebuild`)

A marker is written before the record that needs it and the old one deleted after, so a marker is never missing for
a record that is written; a stale one (the write lost, or the process died between) is harmless: readers check the
record itself. A stale marker is deleted only once it is older than STALE_AFTER: a fresh one may belong to a write
still under way (marker written, record not yet), and deleting it would hide that run from every listing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from shared.adapters.storage import BlobNotFound, BlobStore
from shared.domain.runs import RunRecord, RunState

logger = logging.getLogger(__name__)

INDEX = "index/"
COMPLETE = f"{INDEX}complete"
STALE_AFTER = timedelta(minutes=10)  # far beyond one write's marker-then-record window (milliseconds)
REBUILD_WORKERS = 8


class RunIndex:
    def __init__(self, store: BlobStore, container: str) -> None:
        self._store = store
        self._container = container

    def mark(self, record: RunRecord) -> None:
        self.mark_state(record)
        self._touch(_line_marker(record.line, record.run_id))

    def mark_state(self, record: RunRecord) -> None:
        self._touch(_state_marker(record.state, record.run_id))

    def unmark_state(self, state: RunState, run_id: str) -> None:
        self._store.delete(self._container, _state_marker(state, run_id))

    def is_complete(self) -> bool:
        try:
            self._store.info(self._container, COMPLETE)
            return True
        except BlobNotFound:
            return False

    def run_ids(
        self, *, states: Collection[RunState] | None = None, line: str | None = None
    ) -> dict[str, set[RunState]]:
        """The runs the markers name, each with the states it is marked in: in any of `states` and in `line` (each
        filter optional, not both None)."""
        found: dict[str, set[RunState]] | None = None
        if states:
            found = {}
            for state in states:
                for name in self._store.list_names(self._container, f"{INDEX}state/{state}/"):
                    found.setdefault(name.rsplit("/", 1)[1], set()).add(state)
        if line is not None:
            names = self._store.list_names(self._container, f"{INDEX}line/{line}/")
            in_line = {name.rsplit("/", 1)[1] for name in names}
            found = (
                {run_id: set() for run_id in in_line}
                if found is None
                else {run_id: marked for run_id, marked in found.items() if run_id in in_line}
            )
        return found or {}

    def drop_stale(self, record: RunRecord, marked: Iterable[RunState]) -> None:
        """Delete the markers of states the record is not in, once they are old enough to be stale for sure."""
        for state in marked:
            if state != record.state:
                self._delete_if_stale(_state_marker(state, record.run_id))

    def _delete_if_stale(self, name: str) -> None:
        try:
            modified = self._store.info(self._container, name).last_modified
        except BlobNotFound:
            return
        if modified is not None and datetime.now(UTC) - modified > STALE_AFTER:
            self._store.delete(self._container, name)

    def rebuild(self, records: Iterable[RunRecord]) -> int:
        """The markers every record needs (and no state marker it does not), then `complete`. Safe beside writers:
        a marker it adds that a concurrent write made stale is checked away by readers like any other."""
        states: dict[str, set[str]] = {}
        for name in self._store.list_names(self._container, f"{INDEX}state/"):
            _, _, state, run_id = name.split("/", 3)
            states.setdefault(run_id, set()).add(state)
        lines = set(self._store.list_names(self._container, f"{INDEX}line/"))
        records = list(records)

        def index(record: RunRecord) -> None:
            marked = states.get(record.run_id, set())
            if record.state not in marked:
                self._touch(_state_marker(record.state, record.run_id))
            if _line_marker(record.line, record.run_id) not in lines:
                self._touch(_line_marker(record.line, record.run_id))
            for stale in marked - {record.state}:
                self._delete_if_stale(f"{INDEX}state/{stale}/{record.run_id}")

        with ThreadPoolExecutor(REBUILD_WORKERS, thread_name_prefix="index-rebuild") as pool:
            list(pool.map(index, records))
        count = len(records)
        self._touch(COMPLETE)
        logger.info("run index rebuilt: %d records", count)
        return count

    def _touch(self, name: str) -> None:
        self._store.write(self._container, name, b"", content_type="application/octet-stream")


def _state_marker(state: RunState, run_id: str) -> str:
    return f"{INDEX}state/{state}/{run_id}"


def _line_marker(line: str, run_id: str) -> str:
    return f"{INDEX}line/{line}/{run_id}"
