"""The tiny model converted for CTranslate2: cached by content, pruned to the most recently used, answering greedily
as transformers does wherever transformers' choice is not a near-tie, and a model that does not convert served with
transformers instead."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from shared.engine.local.base_models import build_tiny_model
from shared.engine.local.serving.backends import CTRANSLATE2, TRANSFORMERS
from shared.engine.local.serving.chat_model import ChatModel
from shared.engine.local.serving.conversion import KEEP_CONVERTED, cache_key, converted
from shared.engine.local.serving.protocol import GenerationRequest
from tests.engine.test_batched_generation import sample_conversations

TOKENS = 16
# The tiny model's top logits are about 0.9 apart by 1e-3 or less at many steps. CTranslate2's float32 kernels differ
# from torch's in the last bits, and measured on the sample they chose differently only where the lead was at most
# 0.0019 (4 of 24 answers, each at its first such step): a lead above this is no tie.
CLEAR_MARGIN = 5e-3


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


def test_a_model_is_converted_once_and_found_again_by_its_content(tiny_model: Path, tmp_path: Path):
    # given an empty cache
    cache = tmp_path / "cache"

    # when the model is converted twice
    first = converted(tiny_model, cache)
    written = (first / "model.bin").stat().st_mtime_ns
    again = converted(tiny_model, cache)

    # then the second is the first, not converted again, and nothing partial is left beside it
    assert again == first and (first / "model.bin").stat().st_mtime_ns == written
    assert [p.name for p in cache.iterdir()] == [first.name]
    # and a changed model is another entry
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert cache_key(copy) != cache_key(tiny_model)


def test_only_the_most_recently_used_conversions_are_kept(tiny_model: Path, tmp_path: Path):
    # given a cache with the model's conversion and five older entries
    cache = tmp_path / "cache"
    mine = converted(tiny_model, cache)
    old = time.time() - 3600
    for n in range(5):
        entry = cache / f"old{n}"
        entry.mkdir()
        (entry / "model.bin").write_bytes(b"x")
        os.utime(entry, (old + n, old + n))

    # when the model's conversion is used again
    assert converted(tiny_model, cache) == mine

    # then it and the three most recent others are kept
    assert sorted(p.name for p in cache.iterdir()) == sorted([mine.name, "old2", "old3", "old4"])
    assert len(list(cache.iterdir())) == KEEP_CONVERTED


def _greedy_with_margins(model_dir: Path, conversation: list[dict[str, str]]) -> tuple[list[int], float]:
    """transformers' greedy tokens alone, and the smallest lead of the top logit over the second along them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    encoded = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(
            **encoded, max_new_tokens=TOKENS, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    margins = [float(step[0].topk(2).values[0] - step[0].topk(2).values[1]) for step in out.scores]
    return out.sequences[0, encoded["input_ids"].shape[1] :].tolist(), min(margins)


def test_greedy_answers_match_transformers_wherever_no_step_is_a_near_tie(tiny_model: Path, tmp_path: Path):
    # given the sample's conversations, with transformers' greedy answers and how close each step was
    conversations = sample_conversations(24)
    reference = [_greedy_with_margins(tiny_model, conversation) for conversation in conversations]
    clear = [i for i, (_, margin) in enumerate(reference) if margin > CLEAR_MARGIN]
    assert len(clear) >= 4  # the comparison has something to compare

    # when CTranslate2 answers them, one batch
    model = ChatModel(tiny_model, None, threads=1, max_new_tokens_cap=64, backend=CTRANSLATE2, cache_dir=tmp_path)
    request = GenerationRequest(conversations, {"temperature": 0.0, "max_new_tokens": TOKENS})
    model.generate(request)
    submission_tokens = _tokens_of(model, request)

    # then every answer without a near-tie is transformers' answer, token for token
    assert model.backend.name == CTRANSLATE2
    assert [submission_tokens[i] for i in clear] == [reference[i][0] for i in clear]


def _tokens_of(model: ChatModel, request: GenerationRequest) -> list[list[int]]:
    """The token ids of each answer (the text, encoded back, could merge differently)."""
    import asyncio

    async def run() -> list[list[int]]:
        from shared.engine.local.serving.chat_model import finished

        submission, _, _ = model.submit(request, 60)
        await finished(submission)
        return [conversation.tokens for conversation in submission.conversations]

    return asyncio.run(run())


def test_a_model_that_does_not_convert_is_served_with_transformers(tiny_model: Path, tmp_path: Path):
    # given the tiny model with a partial rotary embedding, which the converter is not taught here
    scaled = tmp_path / "scaled"
    shutil.copytree(tiny_model, scaled)
    config = json.loads((scaled / "config.json").read_text())
    config["rope_parameters"] = {**config["rope_parameters"], "partial_rotary_factor": 0.5}
    (scaled / "config.json").write_text(json.dumps(config))

    # when it is loaded with the default backend
    model = ChatModel(scaled, None, threads=1, max_new_tokens_cap=16, cache_dir=tmp_path / "cache")

    # then it is served with transformers, answers, and no partial conversion is left
    assert model.backend.name == TRANSFORMERS
    answer = model.generate(GenerationRequest([[{"role": "user", "content": "Hi"}]], {"max_new_tokens": 4}))
    assert answer["details"][0]["completion_tokens"] == 4
    assert list((tmp_path / "cache").glob("*")) == []
