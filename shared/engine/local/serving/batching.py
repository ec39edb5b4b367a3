"""Left padding for a batch of prompts, for the transformers backend. Pure: token ids in, token ids out, no torch.

A decoder-only model continues every row from its last column, so each prompt must end there: shorter prompts are
padded on the left, and the attention mask hides the padding. (CTranslate2 takes prompts of different lengths as
they are.) The scheduler decides what shares a batch (scheduler.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MAX_BATCH = 16


@dataclass(frozen=True)
class PaddedBatch:
    input_ids: list[list[int]]
    attention_mask: list[list[int]]  # 0 over the padding, 1 over the prompt
    prompt_tokens: list[int]  # each prompt's own length, without its padding


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> PaddedBatch:
    """The prompts padded on the left with `pad_id` to the longest one."""
    width = max((len(prompt) for prompt in prompts), default=0)
    input_ids = [[pad_id] * (width - len(prompt)) + list(prompt) for prompt in prompts]
    attention_mask = [[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts]
    return PaddedBatch(input_ids, attention_mask, [len(prompt) for prompt in prompts])
