"""Flags for degenerate model answers: empty, never stopped, stuck in a loop, or leaking the chat template. Pure."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Flag(StrEnum):
    EMPTY = "empty"  # empty or whitespace-only
    NO_STOP = "no_stop"  # ran to max_new_tokens without stopping
    REPETITION = "repetition"  # a repetition loop
    TEMPLATE_LEAK = "template_leak"  # chat-template / special tokens in the text


@dataclass(frozen=True)
class DegenerationPolicy:
    repetition_threshold: float = 0.5  # repeated word n-gram ratio at or above this flags REPETITION
    ngram: int = 3
    min_ngrams: int = 6  # shorter answers are never flagged for repetition
    no_stop_fraction: float = 0.95  # without a reported finish reason: estimated tokens >= this * max_new_tokens

    def __post_init__(self) -> None:
        if not 0.0 < self.repetition_threshold <= 1.0:
            raise ValueError(f"repetition_threshold must be in (0, 1], not {self.repetition_threshold}")
        if self.ngram < 1 or self.min_ngrams < 1:
            raise ValueError(f"ngram and min_ngrams must be at least 1, not {self.ngram} and {self.min_ngrams}")
        if not 0.0 < self.no_stop_fraction <= 1.0:
            raise ValueError(f"no_stop_fraction must be in (0, 1], not {self.no_stop_fraction}")


CHARS_PER_TOKEN = 4  # English text with a BPE tokenizer averages about four characters a token
_WORD_EDGES = string.punctuation + "“”‘’«»…–—"

_MARKUP = re.compile(
    r"<\|[^|<>\s]{1,40}\|>"  # <|im_start|>, <|im_end|>, <|end|>, <|assistant|>, <|eot_id|>, <|endoftext|> ...
    r"|</?s>"
    r"|\[/?INST\]"
    r"|<(?:start|end)_of_turn>"
    # what skip_special_tokens leaves of "<|im_start|>assistant\n": the role name alone on its line
    r"|^[ \t]*(?P<role>user|assistant|system)[ \t]*$",
    re.MULTILINE,
)


def _words(text: str) -> list[str]:
    stripped = (word.strip(_WORD_EDGES).lower() for word in text.split())
    return [word for word in stripped if word]


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = _words(text)
    return [tuple(words[start : start + n]) for start in range(len(words) - n + 1)]


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """The share of the answer's word n-grams that repeat an earlier one: 1 - distinct/total; 0.0 without n-grams."""
    ngrams = _ngrams(text, n)
    if not ngrams:
        return 0.0
    return 1.0 - len(set(ngrams)) / len(ngrams)


def estimated_tokens(text: str) -> int:
    """A tokenizer-free estimate of the answer's length in tokens, for engines that report neither it nor why
    generation stopped."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def leaked_markup(text: str) -> list[str]:
    """The special and chat-template tokens in the text, in order of first appearance, each once."""
    found: list[str] = []
    for match in _MARKUP.finditer(text):
        token = match.group("role") or match.group(0)
        if token not in found:
            found.append(token)
    return found


def _ran_out(
    answer: str, *, max_new_tokens: int, finish_reason: str | None, completion_tokens: int | None, fraction: float
) -> bool:
    if finish_reason is not None:
        return finish_reason == "length"
    if completion_tokens is not None:
        return completion_tokens >= max_new_tokens
    return estimated_tokens(answer) >= fraction * max_new_tokens


def _loops(answer: str, policy: DegenerationPolicy) -> bool:
    ngrams = _ngrams(answer, policy.ngram)
    if len(ngrams) < policy.min_ngrams:
        return False
    return 1.0 - len(set(ngrams)) / len(ngrams) >= policy.repetition_threshold


def degeneration_flags(
    answer: str,
    *,
    max_new_tokens: int,
    finish_reason: str | None = None,
    completion_tokens: int | None = None,
    policy: DegenerationPolicy = DegenerationPolicy(),
) -> tuple[Flag, ...]:
    """What is wrong with one answer, in Flag order; EMPTY alone for an empty one. The engine's finish reason is
    trusted first, then its token count, and only then the estimate from the text."""
    if not answer.strip():
        return (Flag.EMPTY,)
    flags: list[Flag] = []
    ran_out = _ran_out(
        answer,
        max_new_tokens=max_new_tokens,
        finish_reason=finish_reason,
        completion_tokens=completion_tokens,
        fraction=policy.no_stop_fraction,
    )
    if ran_out:
        flags.append(Flag.NO_STOP)
    if _loops(answer, policy):
        flags.append(Flag.REPETITION)
    if leaked_markup(answer):
        flags.append(Flag.TEMPLATE_LEAK)
    return tuple(flags)


def describe_flags(flags: Iterable[Flag]) -> str:
    """The flags for a person, e.g. "repetition, no_stop"; "" for none."""
    return ", ".join(flag.value for flag in flags)
