"""Base models of the local engine: the tiny test model is deterministic; folders and hub ids go through as they are."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.engine.local.base_models import (
    PHI3_TRAINING_TEMPLATE,
    BaseModelUnavailable,
    build_tiny_model,
    resolve_base_model,
)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_tiny_model_is_built_identically_every_time(tmp_path: Path):
    first = build_tiny_model(tmp_path / "a")
    second = build_tiny_model(tmp_path / "b")

    assert digest(first) == digest(second)
    assert "model.safetensors" in digest(first)


def test_the_tiny_model_is_a_small_phi3_with_generation_markers(tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(resolve_base_model("tiny", tmp_path))
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)

    assert model.config.model_type == "phi3"
    assert 1_000_000 < model.num_parameters() < 3_000_000
    assert tokenizer.chat_template == PHI3_TRAINING_TEMPLATE
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    assistant = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(assistant) == "Hello<|end|>\n<|endoftext|>"
    # cached: a second resolution reuses the folder
    assert resolve_base_model("tiny", tmp_path) == str(folder)


def test_folders_and_hub_ids_pass_through_and_anything_else_is_refused(tmp_path: Path):
    assert resolve_base_model(str(tmp_path), tmp_path / "cache") == str(tmp_path.resolve())
    assert resolve_base_model("microsoft/Phi-3-mini-4k-instruct", tmp_path) == "microsoft/Phi-3-mini-4k-instruct"
    with pytest.raises(BaseModelUnavailable, match="neither"):
        resolve_base_model("no-such-model", tmp_path)
