"""Held-out conversations as evaluation examples, and one model's answers summed up. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from shared.domain.evaluation.evidence import Answer, ModelSummary


@dataclass(frozen=True)
class HeldOutExample:
    index: int  # the row's position in the test split
    prompt: list[dict[str, str]]  # the conversation up to its last user turn
    reference: str  # its last assistant turn


def held_out_examples(rows: Iterable[Mapping[str, Any]], limit: int) -> list[HeldOutExample]:
    """The first `limit` conversations of a validated split as (prompt, reference): validation guarantees that a
    row ends with an assistant turn after a user turn."""
    examples: list[HeldOutExample] = []
    for index, row in enumerate(rows):
        if len(examples) >= limit:
            break
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
            continue
        examples.append(HeldOutExample(index=index, prompt=messages[:-1], reference=messages[-1]["content"]))
    return examples


def summarize(
    deployment: str,
    model: str,
    answers: Sequence[Answer],
    *,
    probes_passed: int = 0,
    probes: int = 0,
    eval_loss: float | None = None,
) -> ModelSummary:
    metrics = sorted({name for answer in answers for name in answer.scores})
    judged = sorted({name for answer in answers for name, value in answer.judge.items() if value is not None})
    flags = Counter(flag for answer in answers for flag in answer.flags)
    return ModelSummary(
        deployment=deployment,
        model=model,
        scores={name: round(fmean(a.scores.get(name, 0.0) for a in answers), 4) for name in metrics},
        degenerate=sum(1 for answer in answers if answer.flags),
        answers=len(answers),
        flag_counts=dict(sorted(flags.items())),
        probes_passed=probes_passed,
        probes=probes,
        eval_loss=eval_loss,
        judge={name: round(fmean(v for a in answers if (v := a.judge.get(name)) is not None), 3) for name in judged},
    )
