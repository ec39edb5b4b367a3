"""The run record's pure rules: deterministic ids and the state machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.errors import InvalidTransition
from shared.domain.finetune import FineTuneParameters
from shared.domain.runs import (
    NEXT_STATES,
    RUN_ID_PATTERN,
    TERMINAL_STATES,
    DatasetRef,
    RunRecord,
    RunState,
    add_attempt,
    add_source,
    advance,
    advance_from,
    failed_tries,
    new_run,
    resolve_attempts,
    run_id_for,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SHA = "0f" * 32


def received():
    dataset = DatasetRef(container="datasets", blob="a.jsonl", sha256=SHA, size_bytes=1)
    return new_run(
        run_id="ft-0123456789ab",
        dataset=dataset,
        parameters=FineTuneParameters(),
        base_model="tiny",
        engine="local",
        now=NOW,
    )


def test_run_id_is_deterministic_and_shaped():
    first = run_id_for(SHA, FineTuneParameters(), "tiny")
    assert first == run_id_for(SHA, FineTuneParameters(), "tiny")
    assert RUN_ID_PATTERN.match(first)


@pytest.mark.parametrize(
    "other",
    [
        ("1f" * 32, FineTuneParameters(), "tiny"),
        (SHA, FineTuneParameters(learning_rate=1e-4), "tiny"),
        (SHA, FineTuneParameters(), "smollm2-135m-instruct"),
    ],
)
def test_run_id_changes_with_content_parameters_or_base_model(other):
    assert run_id_for(*other) != run_id_for(SHA, FineTuneParameters(), "tiny")


def test_run_id_ignores_how_parameters_were_spelled():
    explicit = FineTuneParameters(num_train_epochs=3, learning_rate=5e-6)
    assert run_id_for(SHA, explicit, "tiny") == run_id_for(SHA, FineTuneParameters(), "tiny")


def test_the_lifecycle_path_is_allowed_and_appends_history():
    # given a received run
    run = received()

    # when it walks the happy path
    path = [
        RunState.VALIDATING,
        RunState.SUBMITTED,
        RunState.RUNNING,
        RunState.TRAINED,
        RunState.REGISTERED,
        RunState.DEPLOYING,
        RunState.DEPLOYED,
        RunState.TORN_DOWN,
    ]
    for state in path:
        run = advance(run, state, f"to {state}", NOW)

    # then each step is in the history, in order
    assert run.state == RunState.TORN_DOWN
    assert [t.to_state for t in run.history] == [RunState.RECEIVED, *path]
    assert all(t.from_state == prev.to_state for prev, t in zip(run.history, run.history[1:], strict=False))


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_states_lead_nowhere(terminal):
    assert NEXT_STATES[terminal] == frozenset()


def test_an_illegal_transition_raises_with_a_stable_code():
    with pytest.raises(InvalidTransition) as raised:
        advance(received(), RunState.DEPLOYED, "skip", NOW)
    assert raised.value.code == "invalid_transition"


def test_advance_from_changes_nothing_when_the_run_moved_on():
    # given a run already past validation
    run = advance(advance(received(), RunState.VALIDATING, "", NOW), RunState.SUBMITTED, "", NOW)

    # when a late redelivery tries to move it from validating
    change = advance_from(RunState.VALIDATING, RunState.REJECTED, "late", NOW)

    # then there is nothing to write
    assert change(run) is None
    assert advance_from(RunState.SUBMITTED, RunState.RUNNING, "event", NOW)(run).state == RunState.RUNNING


def test_add_source_keeps_each_name_once():
    run = add_source(add_source(received(), "datasets/b.jsonl", NOW), "datasets/b.jsonl", NOW)
    assert run.sources == ["datasets/a.jsonl", "datasets/b.jsonl"]


def test_every_state_has_its_transitions_declared():
    assert set(NEXT_STATES) == set(RunState)


def failure(run, operation: str, minutes: int, stage: str = "deploy"):
    return add_attempt(
        run, stage=stage, operation=operation, code="throttled", message="429", now=NOW + timedelta(minutes=minutes)
    )


def test_an_operation_counts_its_failures_since_it_last_succeeded():
    # given two failures of one operation, resolved by a success, then one more
    run = failure(failure(received(), "get_deployment", 1), "get_deployment", 2)
    run = resolve_attempts(run, stage="deploy", operation="get_deployment", now=NOW + timedelta(minutes=3))
    run = failure(run, "get_deployment", 4)

    # then it has failed once in a row, and the history keeps all three with when the first two were resolved
    assert failed_tries(run, stage="deploy", operation="get_deployment") == 1
    assert [(a.operation, a.resolved_at) for a in run.attempts] == [
        ("get_deployment", NOW + timedelta(minutes=3)),
        ("get_deployment", NOW + timedelta(minutes=3)),
        ("get_deployment", None),
    ]


def test_operations_and_stages_count_apart():
    # given failures of two operations of one stage, and of the same operation in another stage
    run = failure(failure(received(), "create_endpoint", 1), "create_deployment", 2)
    run = failure(run, "create_deployment", 3, stage="restore")

    # then each counts only its own, and resolving one leaves the others
    assert failed_tries(run, stage="deploy", operation="create_endpoint") == 1
    assert failed_tries(run, stage="deploy", operation="create_deployment") == 1
    resolved = resolve_attempts(run, stage="deploy", operation="create_endpoint", now=NOW)
    assert failed_tries(resolved, stage="deploy", operation="create_endpoint") == 0
    assert failed_tries(resolved, stage="deploy", operation="create_deployment") == 1
    assert failed_tries(resolved, stage="restore", operation="create_deployment") == 1


def test_a_success_with_nothing_to_resolve_changes_nothing():
    # the ledger writes nothing for a change that returns None: the happy path stays free of writes
    run = failure(received(), "create_endpoint", 1)
    assert resolve_attempts(run, stage="deploy", operation="get_deployment", now=NOW) is None
    resolved = resolve_attempts(run, stage="deploy", operation="create_endpoint", now=NOW)
    assert resolve_attempts(resolved, stage="deploy", operation="create_endpoint", now=NOW) is None


def test_records_written_before_operations_were_named_still_load():
    # given a stored record whose attempt has no operation and no resolved_at
    stored = received().model_dump(mode="json", by_alias=True)
    stored["attempts"] = [
        {"at": "2026-11-24T12:05:00Z", "stage": "deploy", "code": "engine_error", "message": "quota exceeded"}
    ]

    # when it is read
    run = RunRecord.model_validate_json(json.dumps(stored))

    # then the attempt is there, unresolved and of no named operation, so it counts against none
    (attempt,) = run.attempts
    assert (attempt.stage, attempt.operation, attempt.resolved_at, attempt.message) == (
        "deploy",
        "",
        None,
        "quota exceeded",
    )
    assert failed_tries(run, stage="deploy", operation="create_deployment") == 0
