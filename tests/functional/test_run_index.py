"""The run ledger's index against real Azurite: filtered listings read only the runs they name, and a marker of a
write still under way is never taken for a stale one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.adapters import run_index
from shared.adapters.ledger import RECORDS
from shared.context import AppContext
from shared.domain.runs import RunState
from tests.functional.test_ledger import a_run as a_record


def write_record_directly(ctx: AppContext, record) -> None:
    """The record write of a writer that has already written its new marker (the second half of an update)."""
    body = record.model_dump_json(by_alias=True).encode()
    ctx.store.write(ctx.settings.runs_container, f"{RECORDS}{record.run_id}.json", body)


def test_a_listing_between_a_writers_marker_and_its_record_keeps_the_marker(ctx: AppContext):
    # given a run in `received`, and a writer that has marked it `validating` but not yet written the record
    record, _ = ctx.ledger.create(a_record("ft-0000000000a1"))
    moved = record.model_copy(update={"state": RunState.VALIDATING})
    ctx.ledger.index.mark_state(moved)

    # when a listing by the new state reads the record in between
    assert ctx.ledger.list(states={RunState.VALIDATING}) == []

    # then, once the writer's record lands, the run is listed in its new state
    write_record_directly(ctx, moved)
    assert [r.run_id for r in ctx.ledger.list(states={RunState.VALIDATING})] == [record.run_id]


def test_an_old_stale_marker_is_removed_by_the_listing_that_finds_it(ctx: AppContext, monkeypatch: pytest.MonkeyPatch):
    # given a marker left behind by a write that was lost long ago
    record, _ = ctx.ledger.create(a_record("ft-0000000000a2"))
    ctx.ledger.index.mark_state(record.model_copy(update={"state": RunState.RUNNING}))
    monkeypatch.setattr(run_index, "STALE_AFTER", timedelta(0))

    # when a listing by that state finds it, then the run is not listed and the marker is gone
    assert ctx.ledger.list(states={RunState.RUNNING}) == []
    assert ctx.ledger.index.run_ids(states={RunState.RUNNING}) == {}


def test_listings_by_state_and_line_read_only_the_runs_named(ctx: AppContext):
    # given runs in two lines and states
    for n, (line, state) in enumerate(
        [("a1", RunState.RECEIVED), ("a1", RunState.RECEIVED), ("b1", RunState.RECEIVED)]
    ):
        ctx.ledger.create(a_record(f"ft-00000000010{n}").model_copy(update={"line": line, "state": state}))
    reads: list[str] = []
    real_read = ctx.store.read

    def counting(container: str, name: str):
        reads.append(name)
        return real_read(container, name)

    ctx.store.read = counting  # type: ignore[method-assign]

    # when listing one line
    listed = ctx.ledger.list(line="b1")

    # then only its run was read
    assert [r.run_id for r in listed] == ["ft-000000000102"]
    assert reads == [f"{RECORDS}ft-000000000102.json"]


def test_a_rebuild_marks_records_written_before_the_index(ctx: AppContext):
    # given a record written without markers (as before the index), and the index said incomplete
    record = a_record("ft-0000000000a3")
    write_record_directly(ctx, record)
    ctx.store.delete(ctx.settings.runs_container, run_index.COMPLETE)
    ctx.ledger._index_complete = False

    # when the index is rebuilt, then listings by state and by line find it
    assert ctx.ledger.rebuild_index() == 1
    assert [r.run_id for r in ctx.ledger.list(states={record.state})] == [record.run_id]
    assert [r.run_id for r in ctx.ledger.list(line=record.line)] == [record.run_id]
