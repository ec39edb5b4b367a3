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
