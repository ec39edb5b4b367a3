"""The deployment's dynamic batching, on a scripted backend (the boundary the scheduler drives: an ML engine that
decodes a batch): which conversations share a batch, the bounded queue, cancellation and deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.engine.local.serving.scheduler import CANCELED, DEADLINE, LENGTH, STOP, QueueFull, Scheduler

EOS = 0


class ScriptedBackend:
    """Row r says prompt[0] + 1, prompt[0] + 2, ... (and EOS where the prompt asks: its second id is the step);
    each batch waits for `gate` first, and each step takes `step_s`."""

    name = "scripted"

    def __init__(self, step_s: float = 0.0) -> None:
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.step_s = step_s

    def generate(self, prompts: list[list[int]], options: dict[str, Any], on_token: Callable[[int, int], bool]) -> None:
        self.batches.append(prompts)
        self.started.set()
        self.gate.wait(10)
        done = [False] * len(prompts)
        for step in range(1, options["max_new_tokens"] + 1):
            for row, prompt in enumerate(prompts):
                if not done[row]:
                    token = EOS if len(prompt) > 1 and prompt[1] == step else prompt[0] + step
                    done[row] = on_token(row, token)
            if all(done):
                return
            time.sleep(self.step_s)


def decode(ids) -> str:
    return "".join(f"<{i}>" for i in ids)


def scheduler(backend: ScriptedBackend, **overrides: Any) -> Scheduler:
    settings = {"max_batch": 4, "max_queue": 8, "batch_wait_s": 0.05, **overrides}
    return Scheduler(backend, decode=decode, eos_ids={EOS}, **settings)


async def ended(request) -> dict[int, str]:
    outcomes: dict[int, str] = {}
    while len(outcomes) < len(request.conversations):
        kind, index, value = await request.events.get()
        if kind == "end":
            outcomes[index] = value
    return outcomes


GREEDY = {"max_new_tokens": 3, "do_sample": False}


def test_concurrent_requests_with_the_same_options_share_a_batch():
    backend = ScriptedBackend()
    batching = scheduler(backend)

    async def scenario():
        # given three requests at once: two greedy with equal options, one with another length
        far = time.monotonic() + 30
        first = batching.submit([[10]], GREEDY, seed=None, stop=None, deadline=far)
        second = batching.submit([[20], [30]], GREEDY, seed=None, stop=None, deadline=far)
        other = batching.submit([[40]], {**GREEDY, "max_new_tokens": 2}, seed=None, stop=None, deadline=far)
        return [await ended(r) for r in (first, second, other)], [first, second, other]

    outcomes, requests = asyncio.run(scenario())

    # then the equal ones were decoded as one batch of three, the other alone after it
    assert backend.batches == [[[10], [20], [30]], [[40]]]
    assert outcomes == [{0: LENGTH}, {0: LENGTH, 1: LENGTH}, {0: LENGTH}]
    assert [c.tokens for c in requests[1].conversations] == [[21, 22, 23], [31, 32, 33]]
    assert requests[2].conversations[0].tokens == [41, 42]
    batching.close()


def test_a_batch_holds_at_most_max_batch_and_keeps_the_order():
    backend = ScriptedBackend()
    batching = scheduler(backend, max_batch=2)

    async def scenario():
        request = batching.submit([[1], [2], [3]], GREEDY, seed=None, stop=None, deadline=time.monotonic() + 30)
        return await ended(request)

    assert asyncio.run(scenario()) == {0: LENGTH, 1: LENGTH, 2: LENGTH}
    assert backend.batches == [[[1], [2]], [[3]]]
    batching.close()


def test_an_end_token_or_a_stop_sequence_ends_a_conversation_and_its_row_only():
    backend = ScriptedBackend()
    batching = scheduler(backend)

    async def scenario():
        # row 0 says EOS at step 2; row 1's text reaches the stop sequence "<52>" at step 2; row 2 runs to the end
        request = batching.submit(
            [[10, 2], [50], [70]],
            {**GREEDY, "max_new_tokens": 4},
            seed=None,
            stop=["<52>"],
            deadline=time.monotonic() + 30,
        )
        return await ended(request), request

    outcomes, request = asyncio.run(scenario())

    assert outcomes == {0: STOP, 1: STOP, 2: LENGTH}
    assert [c.tokens for c in request.conversations] == [[11, EOS], [51, 52], [71, 72, 73, 74]]
    assert request.conversations[1].text.text == "<51>"
    batching.close()


def test_beyond_the_queue_a_request_is_refused_whole():
    # given a batch running (held at the gate) and a queue of four places, three taken
    backend = ScriptedBackend()
    backend.gate.clear()
    batching = scheduler(backend, max_batch=1, max_queue=4, batch_wait_s=0)

    async def scenario():
        far = time.monotonic() + 30
        running = batching.submit([[1]], GREEDY, seed=None, stop=None, deadline=far)
        assert await asyncio.to_thread(backend.started.wait, 5)
        queued = batching.submit([[2], [3], [4]], GREEDY, seed=None, stop=None, deadline=far)
        # when a request of two conversations comes: it does not fit
        with pytest.raises(QueueFull) as refused:
            batching.submit([[5], [6]], GREEDY, seed=None, stop=None, deadline=far)
        # then it is refused, nothing of it queued; one of one conversation still fits
        assert (refused.value.queued, refused.value.limit) == (3, 4) and batching.queued == 3
        last = batching.submit([[7]], GREEDY, seed=None, stop=None, deadline=far)
        backend.gate.set()
        return [await ended(r) for r in (running, queued, last)]

    assert asyncio.run(scenario()) == [{0: LENGTH}, {0: LENGTH, 1: LENGTH, 2: LENGTH}, {0: LENGTH}]
    assert [batch[0][0] for batch in backend.batches] == [1, 2, 3, 4, 7]
    batching.close()


def test_a_canceled_request_leaves_the_queue_and_its_running_rows_stop():
    backend = ScriptedBackend(step_s=0.01)
    backend.gate.clear()
    batching = scheduler(backend, max_batch=1, batch_wait_s=0)

    async def scenario():
        far = time.monotonic() + 30
        running = batching.submit([[1]], {**GREEDY, "max_new_tokens": 1000}, seed=None, stop=None, deadline=far)
        assert await asyncio.to_thread(backend.started.wait, 5)
        queued = batching.submit([[2]], GREEDY, seed=None, stop=None, deadline=far)
        # when both clients hang up
        batching.cancel(queued)
        assert batching.queued == 0
        backend.gate.set()
        await asyncio.sleep(0.05)
        batching.cancel(running)
        return await ended(running), await ended(queued), running

    running_outcome, queued_outcome, running = asyncio.run(scenario())

    # then the queued one never ran, and the running one stopped long before its 1000 tokens
    assert queued_outcome == {0: CANCELED} and running_outcome == {0: CANCELED}
    assert backend.batches == [[[1]]]
    assert 0 < len(running.conversations[0].tokens) < 1000
    batching.close()


def test_a_deadline_ends_a_conversation_queued_or_running():
    backend = ScriptedBackend(step_s=0.01)
    batching = scheduler(backend, max_batch=1, batch_wait_s=0)

    async def scenario():
        soon = time.monotonic() + 0.3
        running = batching.submit([[1]], {**GREEDY, "max_new_tokens": 1000}, seed=None, stop=None, deadline=soon)
        queued = batching.submit([[2]], GREEDY, seed=None, stop=None, deadline=soon)
        return await ended(running), await ended(queued), running

    running_outcome, queued_outcome, running = asyncio.run(scenario())

    assert running_outcome == {0: DEADLINE} and queued_outcome == {0: DEADLINE}
    assert len(backend.batches) == 1  # the queued one expired before it could run
    assert 0 < len(running.conversations[0].tokens) < 1000
    batching.close()
