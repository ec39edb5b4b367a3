"""Dynamic batching for one deployment: conversations from concurrent requests decoded together.

Every conversation of every request waits in one bounded queue (`QueueFull` beyond `max_queue`: the server answers
429). One worker thread takes the oldest conversation and every other queued one with the same generation options
(greedy or sampled, lengths, seed), up to `max_batch`, waiting `batch_wait_s` for more when fewer are queued (clients
that were answered together come back together), and hands them to the backend as one batch. Each new token goes back
to its request on the request's event loop, so an answer can stream while it is generated. A conversation stops on
its end token, its stop sequence, its `max_new_tokens`, its request's deadline, or when its request is canceled (the
client hung up): its row leaves the batch, and queued ones leave the queue, so a gone client holds no slot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.engine.local.serving.streaming import TextStream

logger = logging.getLogger("shared.engine.local.serving.deployment_server")

# what a conversation ended with; the first three are OpenAI finish reasons
STOP, LENGTH, CANCELED, DEADLINE, FAILED = "stop", "length", "canceled", "deadline", "failed"


class Backend(Protocol):
    """What decodes a batch: `on_token(row, token_id)` for each new token of each row, in order; it returns True
    when that row must stop (the backend then generates nothing more for it)."""

    name: str

    def generate(
        self, prompts: list[list[int]], options: dict[str, Any], on_token: Callable[[int, int], bool]
    ) -> None: ...


class QueueFull(Exception):
    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(f"{queued} conversations are queued already; the queue holds {limit}")
        self.queued, self.limit = queued, limit


@dataclass(frozen=True)
class Options:
    """A conversation's generation options; conversations with equal options can share a batch."""

    kwargs: tuple[tuple[str, Any], ...]  # the backend's generate arguments, sorted
    seed: int | None = None

    @classmethod
    def of(cls, kwargs: dict[str, Any], seed: int | None) -> Options:
        return cls(tuple(sorted(kwargs.items())), seed)

    @property
    def max_new_tokens(self) -> int:
        return int(dict(self.kwargs)["max_new_tokens"])


@dataclass(eq=False)
class Conversation:
    prompt: list[int]
    options: Options
    text: TextStream
    deadline: float  # time.monotonic()
    request: Request
    index: int
    tokens: list[int] = field(default_factory=list)
    outcome: str | None = None

    def ended(self, eos_ids: Collection[int]) -> bool:
        return bool(self.tokens) and self.tokens[-1] in eos_ids


class Request:
    """One request's conversations and the events its handler reads: ("text", index, delta) as tokens arrive, then
    ("end", index, outcome) for each conversation. Events are put on the request's own event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.events: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
        self.conversations: list[Conversation] = []
        self.canceled = False
        self.created = time.monotonic()

    def emit(self, kind: str, index: int, value: str) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, index, value))


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        *,
        decode: Callable[[Sequence[int]], str],
        eos_ids: Collection[int],
        max_batch: int,
        max_queue: int,
        batch_wait_s: float,
    ) -> None:
        self.backend = backend
        self._decode = decode
        self._eos_ids = frozenset(eos_ids)
        self.max_batch = max(1, max_batch)
        self.max_queue = max(1, max_queue)
        self.batch_wait_s = max(0.0, batch_wait_s)
        self._queue: deque[Conversation] = deque()
        self._running: list[Conversation] = []
        self._condition = threading.Condition()
        self._closed = False
        self.batches = 0
        self.decoded = 0  # conversations decoded, for the health answer
        self._worker = threading.Thread(target=self._run, name="generation", daemon=True)
        self._worker.start()

    # -- the request side (event loop thread) ----------------------------------------------------

    def submit(
        self,
        prompts: list[list[int]],
        kwargs: dict[str, Any],
        *,
        seed: int | None,
        stop: Sequence[str] | None,
        deadline: float,
    ) -> Request:
        request = Request(asyncio.get_running_loop())
        options = Options.of(kwargs, seed)
        request.conversations = [
            Conversation(prompt, options, TextStream(self._decode, stop), deadline, request, index)
            for index, prompt in enumerate(prompts)
        ]
        with self._condition:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if len(self._queue) + len(prompts) > self.max_queue:
                raise QueueFull(len(self._queue), self.max_queue)
            self._queue.extend(request.conversations)
            self._condition.notify_all()
        return request

    def cancel(self, request: Request) -> None:
        """The client is gone: queued conversations leave the queue, running ones stop at their next token."""
        request.canceled = True
        with self._condition:
            queued = [c for c in self._queue if c.request is request]
            for conversation in queued:
                self._queue.remove(conversation)
        for conversation in queued:
            self._finish(conversation, CANCELED)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    # -- the worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._decode_batch(batch)

    def _next_batch(self) -> list[Conversation] | None:
        with self._condition:
            while not self._queue and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            options = self._queue[0].options
            gather_until = time.monotonic() + self.batch_wait_s
            while self._compatible(options) < self.max_batch and not self._closed:
                remaining = gather_until - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            if not self._queue:  # all canceled while we waited
                return []
            options = self._queue[0].options
            batch = [c for c in self._queue if c.options == options][: self.max_batch]
            for conversation in batch:
                self._queue.remove(conversation)
            self._running = batch
            return batch

    def _compatible(self, options: Options) -> int:
        return sum(1 for c in self._queue if c.options == options)

    def _decode_batch(self, batch: list[Conversation]) -> None:
        now = time.monotonic()
        live = []
        for conversation in batch:
            if conversation.request.canceled:
                self._finish(conversation, CANCELED)
            elif conversation.deadline <= now:
                self._finish(conversation, DEADLINE)
            else:
                live.append(conversation)
        if not live:
            self._running = []
            return
        options = live[0].options
        kwargs = dict(options.kwargs)
        if options.seed is not None:
            kwargs["seed"] = options.seed
        try:
            self.backend.generate(
                [c.prompt for c in live],
                kwargs,
                lambda row, token: self._on_token(live[row], token),
            )
        except Exception:
            logger.exception("generation failed for a batch of %d", len(live))
            for conversation in live:
                if conversation.outcome is None:
                    self._finish(conversation, FAILED)
        for conversation in live:
            if conversation.outcome is None:
                tokens, limit = len(conversation.tokens), options.max_new_tokens
                self._finish(
                    conversation, LENGTH if tokens >= limit and not conversation.ended(self._eos_ids) else STOP
                )
        self.batches += 1
        self.decoded += len(live)
        self._running = []

    def _on_token(self, conversation: Conversation, token: int) -> bool:
        """Note the token; True when the conversation is over (its row can stop)."""
        if conversation.outcome is not None:
            return True
        if conversation.request.canceled:
            self._finish(conversation, CANCELED)
            return True
        conversation.tokens.append(token)
        if token in self._eos_ids:
            self._finish(conversation, STOP)
            return True
        delta = conversation.text.push(token)
        if delta:
            conversation.request.emit("text", conversation.index, delta)
        if conversation.text.stopped:
            self._finish(conversation, STOP)
            return True
        if len(conversation.tokens) >= conversation.options.max_new_tokens:
            self._finish(conversation, LENGTH)
            return True
        if time.monotonic() >= conversation.deadline:
            self._finish(conversation, DEADLINE)
            return True
        return False

    def _finish(self, conversation: Conversation, outcome: str) -> None:
        if conversation.outcome is not None:
            return
        conversation.outcome = outcome
        if outcome in (STOP, LENGTH):
            rest = conversation.text.flush()
            if rest:
                conversation.request.emit("text", conversation.index, rest)
        conversation.request.emit("end", conversation.index, outcome)
