"""The run ledger's index: empty marker blobs that say which runs are in which state and line, so the sweep and
the listings read the runs they need instead of every record ever written.

    index/state/<state>/<run_id>    one per run, for the state its record is in
    index/line/<line>/<run_id>      one per run
    index/complete                  every record has its markers (written by `rebuild`)

A marker is written before the record that needs it and the old one deleted after, so a marker is never missing for
a record that is written; a stale one (the write lost, or the process died between) is harmless: readers check the
record itself and drop markers that do not match it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from shared.adapters.storage import BlobNotFound, BlobStore
from shared.domain.runs import RunRecord, RunState

logger = logging.getLogger(__name__)

INDEX = "index/"
COMPLETE = f"{INDEX}complete"


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

    def run_ids(self, *, states: Collection[RunState] | None = None, line: str | None = None) -> set[str]:
        """The runs the markers name: in any of `states` and in `line` (each filter optional, not both None)."""
        found: set[str] | None = None
        if states:
            found = {
                name.rsplit("/", 1)[1]
                for state in states
                for name in self._store.list_names(self._container, f"{INDEX}state/{state}/")
            }
        if line is not None:
            in_line = {
                name.rsplit("/", 1)[1] for name in self._store.list_names(self._container, f"{INDEX}line/{line}/")
            }
            found = in_line if found is None else found & in_line
        return found or set()

    def drop_stale(self, record: RunRecord, states: Iterable[RunState]) -> None:
        """Delete the markers of `states` that the record is no longer in (read back by a listing)."""
        for state in states:
            if state != record.state:
                self.unmark_state(state, record.run_id)

    def rebuild(self, records: Iterable[RunRecord]) -> int:
        """The markers every record needs (and no state marker it does not), then `complete`. Safe beside writers:
        a marker it adds that a concurrent write made stale is checked away by readers like any other."""
        states: dict[str, set[str]] = {}
        for name in self._store.list_names(self._container, f"{INDEX}state/"):
            _, _, state, run_id = name.split("/", 3)
            states.setdefault(run_id, set()).add(state)
        lines = set(self._store.list_names(self._container, f"{INDEX}line/"))
        count = 0
        for record in records:
            marked = states.get(record.run_id, set())
            if record.state not in marked:
                self._touch(_state_marker(record.state, record.run_id))
            if _line_marker(record.line, record.run_id) not in lines:
                self._touch(_line_marker(record.line, record.run_id))
            for stale in marked - {record.state}:
                self._store.delete(self._container, f"{INDEX}state/{stale}/{record.run_id}")
            count += 1
        self._touch(COMPLETE)
        logger.info("run index rebuilt: %d records", count)
        return count

    def _touch(self, name: str) -> None:
        self._store.write(self._container, name, b"", content_type="application/octet-stream")


def _state_marker(state: RunState, run_id: str) -> str:
    return f"{INDEX}state/{state}/{run_id}"


def _line_marker(line: str, run_id: str) -> str:
    return f"{INDEX}line/{line}/{run_id}"
