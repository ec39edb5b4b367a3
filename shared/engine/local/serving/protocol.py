"""Request shapes of the local endpoint, parsed and checked. Pure: no I/O, no torch.

Three shapes meet here:
- the Azure ML chat-completion scoring contract (`POST /score`):
  `{"input_data": {"input_string": [<messages>] | [[<messages>], ...], "parameters": {...}}, "params": {}}`
- the OpenAI chat completion (`POST /v1/chat/completions`): `{"model", "messages", "temperature", ...}`
- the internal deployment call (`POST /generate`): `{"conversations": [[<messages>], ...], "parameters": {...}}`

Generation parameters are whitelisted and type-checked once (`normalize_parameters`); `generate_kwargs` turns them
into transformers `generate()` arguments (greedy when `do_sample` is false or the temperature is 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 4


class RequestError(ValueError):
    """A request the endpoint refuses; `status` is the HTTP status to answer with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


Message = dict[str, str]
Conversation = list[Message]


@dataclass(frozen=True)
class GenerationRequest:
    conversations: list[Conversation]
    parameters: dict[str, Any]
    single: bool = False  # /score with a flat list of messages: answer with one string, not a list
    model: str | None = None  # OpenAI `model`: a deployment name when one has it
    choices: int = 1  # OpenAI `n`: conversations holds the conversation `choices` times
    stream: bool = False  # OpenAI `stream`: answer with server-sent events
    stream_usage: bool = False  # OpenAI `stream_options.include_usage`: a last chunk with the usage
    extra: Mapping[str, Any] = field(default_factory=dict)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str, value: Any, *, low: float, high: float | None = None, low_open: bool = False) -> float:
    if not _is_number(value):
        raise RequestError("invalid_parameter", f"parameter {name!r} must be a number, got {type(value).__name__}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise RequestError("invalid_parameter", f"parameter {name!r} must be {bounds}, got {value}")
    return float(value)


def _integer(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise RequestError("invalid_parameter", f"parameter {name!r} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise RequestError("invalid_parameter", f"parameter {name!r} must be {bounds}, got {value}")
    return value


def _stop(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or not all(isinstance(item, str) and item for item in items)
        or len(items) > MAX_STOP_SEQUENCES
    ):
        raise RequestError(
            "invalid_parameter", f"parameter 'stop' must be a non-empty string or a list of up to {MAX_STOP_SEQUENCES}"
        )
    return list(items)


def normalize_parameters(raw: Any) -> dict[str, Any]:
    """The whitelisted generation parameters, checked; unknown ones are dropped. `None` values count as absent."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RequestError("invalid_parameters", "'parameters' must be a JSON object")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if name == "temperature":
            out[name] = _number(name, value, low=0.0, high=100.0)
        elif name == "top_p":
            out[name] = _number(name, value, low=0.0, high=1.0, low_open=True)
        elif name == "top_k":
            out[name] = _integer(name, value, low=0)
        elif name == "repetition_penalty":
            out[name] = _number(name, value, low=0.0, low_open=True)
        elif name == "max_new_tokens":
            out[name] = _integer(name, value, low=1)
        elif name == "min_new_tokens":
            out[name] = _integer(name, value, low=0)
        elif name == "do_sample":
            if not isinstance(value, bool):
                raise RequestError("invalid_parameter", "parameter 'do_sample' must be true or false")
            out[name] = value
        elif name == "seed":
            out[name] = _integer(name, value, low=0, high=2**32 - 1)
        elif name == "stop":
            out[name] = _stop(value)
    return out


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    # OpenAI content parts: [{"type": "text", "text": "..."}]; only text parts are understood
    if isinstance(value, list) and value:
        texts = []
        for part in value:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError("invalid_messages", f"{where}: only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError("invalid_messages", f"{where}: 'content' must be a string")


def parse_conversation(value: Any, where: str) -> Conversation:
    """A non-empty list of {"role", "content"} messages with known roles (extra keys are dropped)."""
    if not isinstance(value, list):
        raise RequestError("invalid_messages", f"{where} must be a list of messages")
    if not value:
        raise RequestError("empty_conversation", f"{where} has no messages")
    conversation: Conversation = []
    for index, message in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(message, Mapping):
            raise RequestError("invalid_messages", f"{here} must be an object with 'role' and 'content'")
        if "role" not in message or "content" not in message:
            raise RequestError("invalid_messages", f"{here} needs both 'role' and 'content'")
        role = message["role"]
        if role not in ROLES:
            raise RequestError("unrecognized_role", f"{here}: role {role!r} is not one of {', '.join(ROLES)}")
        conversation.append({"role": role, "content": _content(message["content"], here)})
    return conversation


def parse_score_request(body: Any, *, max_conversations: int) -> GenerationRequest:
    """The Azure ML chat-completion request. One flat conversation -> single=True (answer a string)."""
    if not isinstance(body, Mapping):
        raise RequestError("invalid_request", "the body must be a JSON object with 'input_data'")
    input_data = body.get("input_data")
    if not isinstance(input_data, Mapping):
        raise RequestError("missing_input_data", "'input_data' must be an object with 'input_string'")
    items = input_data.get("input_string")
    if not isinstance(items, list):
        raise RequestError(
            "missing_input_string", "'input_data.input_string' must be a list of messages or a list of conversations"
        )
    if not items:
        raise RequestError("empty_conversation", "'input_data.input_string' is empty")
    parameters = normalize_parameters(input_data.get("parameters"))
    if all(isinstance(item, Mapping) for item in items):
        return GenerationRequest([parse_conversation(items, "input_string")], parameters, single=True)
    if not all(isinstance(item, list) for item in items):
        raise RequestError(
            "invalid_messages",
            "'input_data.input_string' must hold either messages (one conversation) or lists of messages, not a mix",
        )
    if len(items) > max_conversations:
        raise RequestError(
            "too_many_conversations", f"at most {max_conversations} conversations per request, got {len(items)}"
        )
    conversations = [parse_conversation(item, f"input_string[{i}]") for i, item in enumerate(items)]
    return GenerationRequest(conversations, parameters)


def parse_chat_completion(body: Any) -> GenerationRequest:
    """An OpenAI chat completion request. Sampling follows OpenAI: temperature 1 unless given."""
    if not isinstance(body, Mapping):
        raise RequestError("invalid_request", "the body must be a JSON object with 'messages'")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError("invalid_request", "'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise RequestError("invalid_request", "'stream_options' must be an object")
    conversation = parse_conversation(body.get("messages"), "messages")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("invalid_request", "'model' must be a string")
    n = 1 if body.get("n") is None else _integer("n", body["n"], low=1, high=MAX_CHOICES)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    raw = {
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p"),
        "max_new_tokens": max_tokens,
        "seed": body.get("seed"),
        "stop": body.get("stop"),
    }
    parameters = normalize_parameters(raw)
    parameters["do_sample"] = parameters.get("temperature", 1.0) > 0
    return GenerationRequest(
        [conversation] * n,
        parameters,
        model=model,
        choices=n,
        stream=bool(stream),
        stream_usage=bool(stream and options and options.get("include_usage")),
    )


def parse_generate(body: Any, *, max_conversations: int) -> GenerationRequest:
    """The router's call to a deployment: conversations already checked by the router, checked again here."""
    if not isinstance(body, Mapping):
        raise RequestError("invalid_request", "the body must be a JSON object with 'conversations'")
    items = body.get("conversations")
    if not isinstance(items, list) or not items:
        raise RequestError("invalid_request", "'conversations' must be a non-empty list of conversations")
    if len(items) > max_conversations:
        raise RequestError("too_many_conversations", f"at most {max_conversations} conversations per request")
    conversations = [parse_conversation(item, f"conversations[{i}]") for i, item in enumerate(items)]
    return GenerationRequest(conversations, normalize_parameters(body.get("parameters")))


def is_greedy(parameters: Mapping[str, Any]) -> bool:
    """Greedy unless sampling was asked for with a positive temperature (do_sample defaults to temperature > 0)."""
    temperature = parameters.get("temperature")
    do_sample = parameters.get("do_sample", temperature is not None and temperature > 0)
    return not do_sample or temperature == 0


def generate_kwargs(parameters: Mapping[str, Any], *, max_new_tokens_cap: int, default_max_new_tokens: int) -> dict:
    """transformers `generate()` keyword arguments. transformers 5 refuses temperature 0 with sampling: greedy."""
    max_new = min(parameters.get("max_new_tokens", default_max_new_tokens), max_new_tokens_cap)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new}
    if "min_new_tokens" in parameters:
        kwargs["min_new_tokens"] = min(parameters["min_new_tokens"], max_new)
    if "repetition_penalty" in parameters:
        kwargs["repetition_penalty"] = parameters["repetition_penalty"]
    if is_greedy(parameters):
        kwargs["do_sample"] = False
        return kwargs
    kwargs["do_sample"] = True
    kwargs["temperature"] = parameters.get("temperature", 1.0)
    for name in ("top_p", "top_k"):
        if name in parameters:
            kwargs[name] = parameters[name]
    return kwargs


def truncate_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """`text` cut before the first stop sequence, and whether one was found."""
    if not stop:
        return text, False
    cuts = [index for index in (text.find(s) for s in stop) if index >= 0]
    if not cuts:
        return text, False
    return text[: min(cuts)], True


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}
