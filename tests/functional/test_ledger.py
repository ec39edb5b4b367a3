"""RunLedger against a real Azurite: one JSON blob per run, ETag optimistic concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from shared.context import AppContext
from shared.domain.errors import InvalidTransition, RunNotFound
from shared.domain.finetune import FineTuneParameters
from shared.domain.runs import DatasetRef, RunRecord, RunState, add_attempt, advance, new_run

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def a_run(run_id: str = "ft-0123456789ab", *, created: datetime = T0) -> RunRecord:
    dataset = DatasetRef(container="datasets", blob="train.jsonl", sha256="ab" * 32, size_bytes=10)
    return new_run(
        run_id=run_id, dataset=dataset, parameters=FineTuneParameters(), base_model="tiny", engine="local", now=created
    )


def test_create_is_idempotent_and_returns_the_existing_record(ctx: AppContext):
    # given a stored run
    first, created = ctx.ledger.create(a_run())
    assert created

    # when the same run is created again with other content
    again, created_again = ctx.ledger.create(a_run(created=T0 + timedelta(hours=1)))

    # then the first record stands
    assert not created_again
    assert again == first
    assert ctx.ledger.get(first.run_id).created_at == T0


def test_concurrent_writers_never_lose_an_update(ctx: AppContext):
    # given one run and eight writers, each appending ten attempts
    run_id = ctx.ledger.create(a_run())[0].run_id
    writers, per_writer = 8, 10
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for n in range(per_writer):
                ctx.ledger.update(
                    run_id, lambda r, n=n: add_attempt(r, stage=f"w{writer}", code=str(n), message="", now=T0)
                )
        except BaseException as exc:
            errors.append(exc)

    # when they all write at once
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then every update is there, each writer's in its own order
    assert errors == []
    attempts = ctx.ledger.get(run_id).attempts
    assert len(attempts) == writers * per_writer
    for writer in range(writers):
        assert [a.code for a in attempts if a.stage == f"w{writer}"] == [str(n) for n in range(per_writer)]


def test_update_appends_each_transition_to_the_history(ctx: AppContext):
    # given a received run
    run_id = ctx.ledger.create(a_run())[0].run_id

    # when it moves through validation
    ctx.ledger.update(run_id, lambda r: advance(r, RunState.VALIDATING, "checked", T0 + timedelta(seconds=1)))
    ctx.ledger.update(run_id, lambda r: advance(r, RunState.REJECTED, "2 bad lines", T0 + timedelta(seconds=2)))

    # then the stored history has every step, timestamped, with reasons
    history = ctx.ledger.get(run_id).history
    assert [(t.from_state, t.to_state, t.reason) for t in history] == [
        (None, RunState.RECEIVED, "dataset datasets/train.jsonl"),
        (RunState.RECEIVED, RunState.VALIDATING, "checked"),
        (RunState.VALIDATING, RunState.REJECTED, "2 bad lines"),
    ]
    assert [t.at for t in history] == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]


def test_an_illegal_transition_is_refused_and_nothing_is_written(ctx: AppContext):
    run_id = ctx.ledger.create(a_run())[0].run_id

    with pytest.raises(InvalidTransition):
        ctx.ledger.update(run_id, lambda r: advance(r, RunState.DEPLOYED, "skip ahead", T0))

    assert ctx.ledger.get(run_id).state == RunState.RECEIVED


def test_get_of_an_unknown_run_is_run_not_found(ctx: AppContext):
    with pytest.raises(RunNotFound) as raised:
        ctx.ledger.get("ft-000000000000")
    assert raised.value.code == "run_not_found"
    assert ctx.ledger.find("ft-000000000000") is None


def test_list_is_newest_first_and_filters_by_state(ctx: AppContext):
    # given three runs, one rejected
    for n in range(3):
        ctx.ledger.create(a_run(f"ft-00000000000{n}", created=T0 + timedelta(minutes=n)))
    ctx.ledger.update("ft-000000000001", lambda r: advance(r, RunState.VALIDATING, "", T0))
    ctx.ledger.update("ft-000000000001", lambda r: advance(r, RunState.REJECTED, "", T0))

    # then
    assert [r.run_id for r in ctx.ledger.list()] == ["ft-000000000002", "ft-000000000001", "ft-000000000000"]
    assert [r.run_id for r in ctx.ledger.list(states={RunState.REJECTED})] == ["ft-000000000001"]
    assert [r.run_id for r in ctx.ledger.list(limit=1)] == ["ft-000000000002"]


def test_receipts_map_an_upload_version_to_its_run(ctx: AppContext):
    assert ctx.ledger.receipt("datasets/a.jsonl@0x1") is None
    ctx.ledger.add_receipt("datasets/a.jsonl@0x1", "ft-0123456789ab")
    ctx.ledger.add_receipt("datasets/a.jsonl@0x1", "ft-0123456789ab")  # idempotent
    assert ctx.ledger.receipt("datasets/a.jsonl@0x1") == "ft-0123456789ab"
    assert ctx.ledger.receipt("datasets/a.jsonl@0x2") is None
