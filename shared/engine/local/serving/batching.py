"""The conversations of one request decoded as one batch: chunks, left padding, and what each row generated.

Pure: token ids in, token ids out, no torch. The deployment server turns a padded batch into tensors and calls
`generate` once per chunk; a row that ends early is followed by padding up to the longest row, which `completion`
cuts off.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

DEFAULT_MAX_BATCH = 16

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` in order, in consecutive slices of at most `size` (at least one per slice)."""
    size = max(1, size)
    return [items[start : start + size] for start in range(0, len(items), size)]


@dataclass(frozen=True)
class PaddedBatch:
    input_ids: list[list[int]]
    attention_mask: list[list[int]]  # 0 over the padding, 1 over the prompt
    prompt_tokens: list[int]  # each prompt's own length, without its padding


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> PaddedBatch:
    """The prompts padded on the left with `pad_id` to the longest one: a decoder-only model continues every row from
    its last column, so each prompt must end there."""
    width = max((len(prompt) for prompt in prompts), default=0)
    input_ids = [[pad_id] * (width - len(prompt)) + list(prompt) for prompt in prompts]
    attention_mask = [[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts]
    return PaddedBatch(input_ids, attention_mask, [len(prompt) for prompt in prompts])


def completion(generated: Sequence[int], stop_ids: Collection[int]) -> list[int]:
    """A row's generated ids up to and including the first id `generate` stops on (an eos); what follows it is the
    padding that fills a row that finished before the others. A row that never stopped is kept whole."""
    for index, token in enumerate(generated):
        if token in stop_ids:
            return list(generated[: index + 1])
    return list(generated)


def finish_reason(ids: Sequence[int], *, eos_ids: Collection[int], stopped: bool, max_new_tokens: int) -> str:
    """The OpenAI finish reason: "stop" when the completion ended with an eos, its text hit a stop string, or it is
    shorter than max_new_tokens; "length" when it ran out of tokens."""
    ended = bool(ids) and ids[-1] in eos_ids
    return "stop" if ended or stopped or len(ids) < max_new_tokens else "length"
