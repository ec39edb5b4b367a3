"""Batched generation: the conversations of one request, decoded as one batch, are answered exactly as they are one
at a time. The pure helpers on values, then real deployment processes over the tiny model and over a
variant of it that ends some answers early (the tiny model itself never says its end token).
"""

from __future__ import annotations

import http.client
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shared.domain.tags import MANAGED_TAG
from shared.engine.base import ModelRef
from shared.engine.local.base_models import build_tiny_model
from shared.engine.local.endpoints import LocalEndpoints
from shared.engine.local.serving.batching import left_pad
from shared.engine.local.serving.chat_model import ChatModel
from shared.engine.local.serving.protocol import GenerationRequest

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ultrachat_sample.jsonl"
MODEL = ModelRef(name="tiny-chat", version="1")
EARLY_TOKENS = 24  # an answer of the eos-prone model that says the chosen token within this many ends early


def sample_conversations(count: int) -> list[list[dict[str, str]]]:
    """The first `count` distinct conversations of the bundled sample, up to their last user turn."""
    conversations: list[list[dict[str, str]]] = []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        last_user = max(index for index, message in enumerate(messages) if message["role"] == "user")
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages[: last_user + 1]]
        if conversation not in conversations:
            conversations.append(conversation)
        if len(conversations) == count:
            break
    return conversations


CONVERSATIONS = sample_conversations(8)


# -- the pure helpers --------------------------------------------------------------------------


def test_prompts_are_padded_on_the_left_to_the_longest():
    batch = left_pad([[7, 8, 9], [4], [5, 6]], pad_id=0)

    assert batch.input_ids == [[7, 8, 9], [0, 0, 4], [0, 5, 6]]
    assert batch.attention_mask == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert batch.prompt_tokens == [3, 1, 2]


# -- real models -------------------------------------------------------------------------------


def _greedy_completions(model_dir: Path, conversations: list[list[dict[str, str]]], tokens: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    completions = []
    with torch.inference_mode():
        for conversation in conversations:
            encoded = tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            width = encoded["input_ids"].shape[1]
            output = model.generate(**encoded, max_new_tokens=tokens, do_sample=False, pad_token_id=1)
            completions.append(output[0, width:].tolist())
    return completions


def build_eos_prone_model(tiny: Path, out: Path) -> Path:
    """The tiny model with the output row of its end token `<|end|>` replaced by 1.01 times the row of a token that
    about half of CONVERSATIONS' greedy answers say within EARLY_TOKENS: where that token would lead with a positive
    logit the end token leads instead, so those answers end about where they would have said it and the others run
    on. (Not an exact copy: a tie would be broken by float noise, which batching changes in the last bits.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    said = Counter(token for ids in _greedy_completions(tiny, CONVERSATIONS, EARLY_TOKENS) for token in set(ids))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    half = len(CONVERSATIONS) / 2
    chosen = min((token for token in said if token > end_id), key=lambda token: (abs(said[token] - half), token))
    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    with torch.no_grad():
        model.get_output_embeddings().weight[end_id] = 1.01 * model.get_output_embeddings().weight[chosen]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="module")
def eos_prone_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_eos_prone_model(tiny_model, tmp_path_factory.mktemp("eos-prone") / "model")


@pytest.fixture(scope="module")
def deployment_ports(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, eos_prone_model: Path
) -> Iterator[dict[str, int]]:
    """ep-batching: `tiny` (the tiny model) and `eos` (its eos-prone variant); their deployment servers' ports."""
    endpoints = LocalEndpoints(tmp_path_factory.mktemp("batching-state"))
    endpoints.create_or_update_endpoint("ep-batching", {MANAGED_TAG: "true"})
    try:
        with ThreadPoolExecutor(2) as pool:  # both load at once
            started = [
                pool.submit(endpoints.create_deployment, "ep-batching", name, MODEL, folder)
                for name, folder in (("tiny", tiny_model), ("eos", eos_prone_model))
            ]
        assert all(future.result().state == "Succeeded" for future in started)
        config = json.loads((endpoints.root / "ep-batching" / "endpoint.json").read_text())
        yield {name: spec["port"] for name, spec in config["deployments"].items()}
    finally:
        endpoints.delete_endpoint("ep-batching")


def generate(port: int, conversations: list[Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """One POST /generate to a deployment server (what the router sends it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        body = json.dumps({"conversations": conversations, "parameters": parameters})
        connection.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer
    finally:
        connection.close()


@pytest.mark.parametrize(("deployment", "max_new_tokens"), [("tiny", 64), ("eos", EARLY_TOKENS)])
def test_one_request_of_eight_answers_as_eight_requests_of_one(
    deployment_ports: dict[str, int], deployment: str, max_new_tokens: int
):
    # given eight different conversations from the sample, and greedy parameters
    port = deployment_ports[deployment]
    parameters = {"temperature": 0.0, "max_new_tokens": max_new_tokens}

    # when they are sent one request each, then all in one request (one left-padded batch)
    alone = [generate(port, [conversation], parameters) for conversation in CONVERSATIONS]
    together = generate(port, CONVERSATIONS, parameters)

    # then every answer and its details are the same both ways
    assert together["outputs"] == [answer["outputs"][0] for answer in alone]
    assert together["details"] == [answer["details"][0] for answer in alone]
    assert together["usage"]["completion_tokens"] == sum(answer["usage"]["completion_tokens"] for answer in alone)
    prompt_lengths = {detail["prompt_tokens"] for detail in together["details"]}
    assert len(prompt_lengths) > 1  # the batch was padded
    reasons = Counter(detail["finish_reason"] for detail in together["details"])
    if deployment == "tiny":
        assert reasons == {"length": 8}
    else:  # some ended early with the end token, some ran out of tokens
        assert reasons["stop"] and reasons["length"], reasons
        early = [d["completion_tokens"] for d in together["details"] if d["finish_reason"] == "stop"]
        assert all(tokens < max_new_tokens for tokens in early)


def test_chunks_of_a_request_answer_as_one_batch(eos_prone_model: Path):
    # given the eos-prone model loaded twice in this process: batches of at most 3, and of 16
    small = ChatModel(eos_prone_model, None, threads=1, max_new_tokens_cap=64, max_batch=3)
    large = ChatModel(eos_prone_model, None, threads=1, max_new_tokens_cap=64)
    request = GenerationRequest(CONVERSATIONS, {"temperature": 0.0, "max_new_tokens": EARLY_TOKENS})

    # when both answer the eight conversations
    chunked, whole = small.generate(request), large.generate(request)

    # then the answers and their details are the same (three generate calls against one)
    assert chunked["outputs"] == whole["outputs"]
    assert chunked["details"] == whole["details"]
