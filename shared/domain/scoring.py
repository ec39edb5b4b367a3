"""The Azure ML chat-completion scoring contract, both directions. Pure."""

from __future__ import annotations

from typing import Any

SEED_PARAMETERS = {"temperature": 0.6, "top_p": 0.9, "do_sample": True, "max_new_tokens": 200}


def scoring_request(messages: list[dict[str, str]], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The notebook's request: one conversation, the seed's sampling parameters."""
    return {
        "input_data": {"input_string": [messages], "parameters": {**SEED_PARAMETERS, **(parameters or {})}},
        "params": {},
    }


def answer_text(response: Any) -> str | None:
    """The assistant text of a scoring response, read tolerantly: {"output": ...} from the inference server,
    [{"0": ...}] from Azure's generic MLflow scorer, or a bare string."""
    if isinstance(response, str):
        return response
    if isinstance(response, list):
        return answer_text(response[0]) if response else None
    if isinstance(response, dict):
        for key in ("output", "0"):
            if key in response:
                return answer_text(response[key])
    return None


def smoke_test_conversation(first_test_row: dict[str, Any]) -> list[dict[str, str]]:
    """A held-out conversation up to its last user turn: what the model is asked to answer."""
    messages = [{"role": m["role"], "content": m["content"]} for m in first_test_row["messages"]]
    while messages and messages[-1]["role"] != "user":
        messages.pop()
    return messages


def greedy_batch_request(conversations: list[list[dict[str, str]]], max_new_tokens: int) -> dict[str, Any]:
    """Several conversations in one request, answered greedily: what an evaluation sends, the same to both engines."""
    return {
        "input_data": {
            "input_string": conversations,
            "parameters": {"do_sample": False, "temperature": 0.0, "max_new_tokens": max_new_tokens},
        },
        "params": {},
    }


def batch_answers(response: Any, count: int) -> list[tuple[str, str | None]]:
    """(text, finish reason) per conversation of a batch request, read tolerantly: {"output": [...]} with the local
    server's optional "details", or Azure's generic MLflow scorer's [{"0": ...}, ...]. The finish reason is None
    where the endpoint does not report one. An answer of another length is an error of the endpoint's."""
    if isinstance(response, dict) and isinstance(response.get("output"), list):
        texts = [answer_text(item) for item in response["output"]]
        found = response.get("details")
        details: list[Any] = found if isinstance(found, list) else []
    elif isinstance(response, list):
        texts, details = [answer_text(item) for item in response], []
    else:
        texts, details = [answer_text(response)], []
    if len(texts) != count:
        raise ValueError(f"{len(texts)} answers to {count} conversations")
    reasons = [d.get("finish_reason") if isinstance(d, dict) else None for d in details]
    reasons = (reasons + [None] * count)[:count]
    return [
        (text or "", reason if isinstance(reason, str) else None) for text, reason in zip(texts, reasons, strict=True)
    ]
