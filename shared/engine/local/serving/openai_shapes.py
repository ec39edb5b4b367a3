"""OpenAI's chat completion shapes, built from a deployment's answers. Pure: values in, JSON-ready dicts out.

Non-streaming: one `chat.completion` with `choices` and `usage`. Streaming: `chat.completion.chunk` events, each
sent as `data: <json>` and a blank line (server-sent events), ending with `data: [DONE]`; the first chunk of a
choice carries the assistant role, the last its finish reason, and with `stream_options.include_usage` a final chunk
with no choices carries the usage, as OpenAI's API does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_of(details: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """`n` choices share one prompt: its tokens are counted once."""
    prompt_tokens = int(details[0].get("prompt_tokens", 0)) if details else 0
    completion_tokens = sum(int(d.get("completion_tokens", 0)) for d in details)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(model: str, outputs: Sequence[str], details: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "finish_reason": detail.get("finish_reason", "stop"),
            "logprobs": None,
        }
        for index, (text, detail) in enumerate(zip(outputs, details, strict=False))
    ]
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_of(details),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """The server-sent events of one streamed completion."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        self._started: set[int] = set()

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n"

    def text(self, index: int, content: str) -> bytes:
        delta: dict[str, Any] = {"content": content}
        if index not in self._started:
            self._started.add(index)
            delta = {"role": "assistant", **delta}
        return self._event([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])

    def finish(self, index: int, reason: str) -> bytes:
        delta: dict[str, Any] = {} if index in self._started else {"role": "assistant", "content": ""}
        self._started.add(index)
        return self._event([{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}])

    def usage(self, details: Sequence[Mapping[str, Any]]) -> bytes:
        return self._event([], usage=usage_of(details))


def error_event(code: str, message: str) -> bytes:
    """An error after the stream began (OpenAI's client raises it as an APIError)."""
    return b"data: " + json.dumps({"error": {"code": code, "message": message}}).encode("utf-8") + b"\n\n"
