"""The job's training data: conversations read from the validated split files, and the checks the worker makes
on them and on the base model's chat template before it trains."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MIN_TRAINING_ROWS = 10  # what chat_completion_pipeline requires
# {% generation %} in any whitespace-control spelling ({%- generation -%} ...); not the word alone, which
# `add_generation_prompt` also contains.
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
NO_ASSISTANT_TOKENS = (
    "No assistant tokens found after preprocessing. Please increase max_seq_len "
    "(every training row's assistant turns fall beyond max_seq_length)"
)


def has_generation_markers(chat_template: str | None) -> bool:
    return chat_template is not None and GENERATION_MARKER.search(chat_template) is not None


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """The rows of a validated ultrachat JSONL file, reduced to {"messages": [{"role", "content"}, ...]}.

    Everything else is dropped: with a `prompt` column TRL would take its prompt/completion path.
    """
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.strip():
                row = json.loads(line)
                rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]})
    return rows
