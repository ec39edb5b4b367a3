"""The run record's pure rules: deterministic ids and the state machine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.errors import InvalidTransition
from shared.finetune import FineTuneParameters
from shared.runs import (
    NEXT_STATES,
    RUN_ID_PATTERN,
    TERMINAL_STATES,
    DatasetRef,
    RunState,
    add_source,
    advance,
    advance_from,
    new_run,
    run_id_for,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SHA = "0f" * 32


def received():
    dataset = DatasetRef(container="datasets", blob="a.jsonl", sha256=SHA, size_bytes=1)
    return new_run(run_id="ft-0123456789ab", dataset=dataset, parameters=FineTuneParameters(), base_model="tiny",
                   engine="local", now=NOW)


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
    path = [RunState.VALIDATING, RunState.SUBMITTED, RunState.RUNNING, RunState.TRAINED, RunState.REGISTERED,
            RunState.DEPLOYING, RunState.DEPLOYED, RunState.TORN_DOWN]
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
