"""A chat model as a deployment serves it: its tokenizer and chat template, its backend (backends.py) and the scheduler
that batches for it (scheduler.py); what a finished submission answers.

Here only the tokenizer and the model's JSON files are read (context length, end and pad tokens, the parameter count
from the safetensors headers); the weights are the backend's to load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from shared.engine.local.serving.backends import AUTO, CTRANSLATE2, Ctranslate2Backend, TransformersBackend
from shared.engine.local.serving.batching import DEFAULT_MAX_BATCH
from shared.engine.local.serving.conversion import converted
from shared.engine.local.serving.protocol import GenerationRequest, RequestError, generate_kwargs, truncate_at_stop
from shared.engine.local.serving.scheduler import DEADLINE, FAILED, LENGTH, QueueFull, Scheduler
from shared.engine.local.serving.scheduler import Request as Submission

if TYPE_CHECKING:
    from transformers import BatchEncoding

MAX_NEW_TOKENS_CAP = 1024
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_MAX_QUEUE = 256
DEFAULT_BATCH_WAIT_MS = 10
DEFAULT_DEADLINE_S = 300.0

logger = logging.getLogger("shared.engine.local.serving.deployment_server")


class OutputDetail(TypedDict):
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _ids(value: Any) -> set[int]:
    items = value if isinstance(value, list) else [value]
    return {item for item in items if isinstance(item, int)}


def count_parameters(model_dir: Path) -> int:
    """The parameters in the folder's safetensors files, from their headers (no weights read, no torch)."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dimension in tensor["shape"]:
                    count *= dimension
                total += count
    return total


class ChatModel:
    """A chat model's tokenizer, its backend and the scheduler that batches for it."""

    def __init__(
        self,
        model_dir: Path,
        tokenizer_dir: Path | None,
        *,
        threads: int,
        max_new_tokens_cap: int,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_MS / 1000,
        backend: str = AUTO,
        cache_dir: Path | None = None,
    ) -> None:
        import transformers
        from transformers import AutoTokenizer

        transformers.utils.logging.set_verbosity_error()
        self.max_new_tokens_cap = max_new_tokens_cap
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
        if not getattr(self.tokenizer, "chat_template", None):
            raise RuntimeError(f"the tokenizer in {tokenizer_dir or model_dir} has no chat template")
        config = _json_file(model_dir / "config.json")
        generation = _json_file(model_dir / "generation_config.json")
        limits = [config.get("max_position_embeddings"), getattr(self.tokenizer, "model_max_length", None)]
        self.context_length = min((n for n in limits if isinstance(n, int) and 0 < n < 10**7), default=None)
        # what generation stops on: the generation config's eos (as transformers' generate), else the model's
        self.eos_ids = _ids(generation.get("eos_token_id", config.get("eos_token_id")))
        if not self.eos_ids and self.tokenizer.eos_token_id is not None:
            self.eos_ids = {self.tokenizer.eos_token_id}
        pad = generation.get("pad_token_id", config.get("pad_token_id", self.tokenizer.pad_token_id))
        self.pad_id = pad if isinstance(pad, int) else next(iter(sorted(self.eos_ids)), None)
        self.parameters = count_parameters(model_dir)
        self.backend = self._backend(model_dir, tokenizer_dir, backend, threads, cache_dir)
        self.scheduler = Scheduler(
            self.backend,
            decode=lambda ids: cast(str, self.tokenizer.decode(list(ids), skip_special_tokens=True)),
            eos_ids=self.eos_ids,
            max_batch=max_batch,
            max_queue=max_queue,
            batch_wait_s=batch_wait_s,
        )

    def _backend(
        self, model_dir: Path, tokenizer_dir: Path | None, kind: str, threads: int, cache_dir: Path | None
    ) -> Ctranslate2Backend | TransformersBackend:
        if kind in (AUTO, CTRANSLATE2):
            try:
                folder = converted(
                    model_dir,
                    cache_dir or Path(tempfile.gettempdir()) / "ft-autopilot-ctranslate2",
                    tokenizer_dir=tokenizer_dir,
                )
                return Ctranslate2Backend(
                    folder,
                    threads=threads,
                    tokens=lambda ids: list(self.tokenizer.convert_ids_to_tokens(ids)),
                    end_ids=self.eos_ids,
                )
            except Exception as exc:
                if kind == CTRANSLATE2:
                    raise
                logger.warning("serving %s with transformers: %s", model_dir, exc)
        return TransformersBackend(model_dir, threads=threads, pad_id=self.pad_id)

    # -- requests --------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, deadline_s: float) -> tuple[Submission, list[int], int]:
        """The request's conversations queued for decoding: the submission, each prompt's length, max_new_tokens.
        RequestError for a prompt too long or rejected by the template, 429 when the queue is full."""
        kwargs = generate_kwargs(
            request.parameters,
            max_new_tokens_cap=self.max_new_tokens_cap,
            default_max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        )
        max_new_tokens = kwargs["max_new_tokens"]
        prompts = [self.encode(conversation, max_new_tokens) for conversation in request.conversations]
        seed = request.parameters.get("seed") if kwargs.get("do_sample") else None
        try:
            submission = self.scheduler.submit(
                prompts,
                kwargs,
                seed=seed,
                stop=request.parameters.get("stop"),
                deadline=time.monotonic() + deadline_s,
            )
        except QueueFull as exc:
            raise RequestError("queue_full", f"the deployment is at capacity: {exc}; retry later", 429) from None
        return submission, [len(prompt) for prompt in prompts], max_new_tokens

    def answer(self, submission: Submission, prompt_tokens: list[int], stop: list[str] | None) -> dict[str, Any]:
        """The finished submission's answers, as the non-streaming /generate returns them."""
        outputs: list[str] = []
        details: list[OutputDetail] = []
        for conversation, prompt_length in zip(submission.conversations, prompt_tokens, strict=True):
            # the whole completion decoded at once: the very text one `generate` call would have given
            decoded = cast(str, self.tokenizer.decode(conversation.tokens, skip_special_tokens=True))
            outputs.append(truncate_at_stop(decoded, stop)[0])
            finish = "length" if conversation.outcome == LENGTH else "stop"
            details.append(
                {"finish_reason": finish, "prompt_tokens": prompt_length, "completion_tokens": len(conversation.tokens)}
            )
        return {"outputs": outputs, "details": details, "usage": usage(details, submission)}

    def generate(self, request: GenerationRequest, deadline_s: float = DEFAULT_DEADLINE_S) -> dict[str, Any]:
        """One request answered in this thread (for tests and benchmarks that load the model in-process)."""

        async def run() -> dict[str, Any]:
            submission, prompt_tokens, _ = self.submit(request, deadline_s)
            await finished(submission)
            problem = failure(submission)
            if problem is not None:
                raise problem
            return self.answer(submission, prompt_tokens, request.parameters.get("stop"))

        return asyncio.run(run())

    def _encode_chat(self, conversation: list[dict[str, str]]) -> list[int]:
        # return_dict without return_tensors gives a BatchEncoding of one list of ids; the library types every
        # combination's result as one union
        encoded = cast(
            "BatchEncoding[list[int]]",
            self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=True),
        )
        return list(encoded["input_ids"])

    def encode(self, conversation: list[dict[str, str]], max_new_tokens: int) -> list[int]:
        try:
            ids = self._encode_chat(conversation)
        except Exception as exc:  # the template may reject a conversation (e.g. roles out of order)
            raise RequestError(
                "chat_template_error", f"the model's chat template rejected the messages: {exc}"
            ) from None
        if self.context_length is not None and len(ids) + max_new_tokens > self.context_length:
            raise RequestError(
                "prompt_too_long",
                f"the prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} it exceeds the model's "
                f"context of {self.context_length} tokens",
            )
        return ids


def usage(details: list[OutputDetail], submission: Submission) -> dict[str, Any]:
    prompt_total = sum(d["prompt_tokens"] for d in details)
    completion_total = sum(d["completion_tokens"] for d in details)
    return {
        "prompt_tokens": prompt_total,
        "completion_tokens": completion_total,
        "total_tokens": prompt_total + completion_total,
        "generate_s": round(time.monotonic() - submission.created, 4),
    }


async def finished(submission: Submission) -> None:
    """Until every conversation of the submission has ended (its text events are left unread)."""
    remaining = len(submission.conversations)
    while remaining:
        kind, _, _ = await submission.events.get()
        remaining -= kind == "end"


def failure(submission: Submission) -> RequestError | None:
    outcomes = {conversation.outcome for conversation in submission.conversations}
    if DEADLINE in outcomes:
        return RequestError("deadline_exceeded", "the request outlived its deadline before it was answered", 503)
    if FAILED in outcomes:
        return RequestError("generation_failed", "the model failed to generate; see the deployment's log", 500)
    return None
