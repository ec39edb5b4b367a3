#!/usr/bin/env python3
"""Write the bundled sample datasets (ultrachat_200k's row shape), deterministically.

    python samples/make_samples.py        # rewrites samples/ultrachat_sample.jsonl and samples/ultrachat_broken.jsonl

The conversations are templated so that a small model can learn their style in a few minutes on a CPU:
a polite support assistant that answers in numbered steps, plus capitals and unit conversions.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

DEVICES = ["printer", "router", "laptop", "headset", "smart speaker", "tablet", "monitor", "keyboard"]
BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne"]
ASKS = ["What should I do?", "Can you help?", "Any idea how to fix it?", "How do I sort this out?"]
CAPITAL_ASKS = [
    "What is the capital of {c}?",
    "Which city is the capital of {c}?",
    "Name the capital of {c}.",
    "Tell me the capital city of {c}.",
]
SYMPTOMS = ["won't turn on", "keeps disconnecting", "is very slow", "makes a buzzing noise", "won't charge"]
CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Kenya": "Nairobi",
    "Canada": "Ottawa",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Egypt": "Cairo",
    "Chile": "Santiago",
    "Poland": "Warsaw",
    "Vietnam": "Hanoi",
}
CONVERSIONS = [("kilometres", "miles", 0.621), ("kilograms", "pounds", 2.205), ("litres", "gallons", 0.264)]


def support(rng: random.Random) -> list[dict[str, str]]:
    device, symptom, brand = rng.choice(DEVICES), rng.choice(SYMPTOMS), rng.choice(BRANDS)
    answer = (
        f"Sorry to hear your {device} {symptom}. Let's fix it step by step.\n"
        f"1. Restart the {device} and wait thirty seconds.\n"
        f"2. Check that every cable and the power supply are firmly connected.\n"
        f"3. Install the latest update for the {device}.\n"
        "If it still happens, contact support with the model number."
    )
    messages = [
        {"role": "user", "content": f"My {brand} {device} {symptom}. {rng.choice(ASKS)}"},
        {"role": "assistant", "content": answer},
    ]
    if rng.random() < 0.3:
        messages += [
            {"role": "user", "content": "Thanks! How long does the update take?"},
            {"role": "assistant", "content": f"Usually five to ten minutes. Keep the {device} plugged in."},
        ]
    return messages


def capital(rng: random.Random) -> list[dict[str, str]]:
    country = rng.choice(sorted(CAPITALS))
    return [
        {"role": "user", "content": rng.choice(CAPITAL_ASKS).format(c=country)},
        {"role": "assistant", "content": f"The capital of {country} is {CAPITALS[country]}."},
    ]


def conversion(rng: random.Random) -> list[dict[str, str]]:
    source, target, factor = rng.choice(CONVERSIONS)
    amount = rng.randint(2, 90)
    return [
        {"role": "system", "content": "You are a precise assistant. Answer in one sentence."},
        {"role": "user", "content": f"How many {target} is {amount} {source}?"},
        {"role": "assistant", "content": f"{amount} {source} is about {amount * factor:.1f} {target}."},
    ]


def row(messages: list[dict[str, str]]) -> dict:
    prompt = next(m["content"] for m in messages if m["role"] == "user")
    return {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(), "messages": messages}


def sample_rows(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    makers = [support, support, support, capital, conversion, conversion]
    return [row(rng.choice(makers)(rng)) for _ in range(count)]


def broken_lines() -> list[str]:
    good = [json.dumps(r) for r in sample_rows(14, seed=11)]
    bad = [
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}',  # invalid_json
        '{"prompt": "no messages here"}',  # missing_messages
        '{"messages": [{"role": "user", "content": "Ping?"}]}',  # too_few_messages
        '{"messages": [{"role": "User", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]}',  # role case
        '{"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "?"}]}',  # empty_content
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},'
        ' {"role": "user", "content": "And?"}]}',  # last_message_not_assistant
    ]
    lines = good[:5] + bad[:3] + good[5:10] + [""] + bad[3:] + good[10:]
    return lines


def main() -> None:
    with open(HERE / "ultrachat_sample.jsonl", "w", encoding="utf-8") as out:
        for r in sample_rows(240):
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(HERE / "ultrachat_broken.jsonl", "w", encoding="utf-8") as out:
        out.write("\n".join(broken_lines()) + "\n")


if __name__ == "__main__":
    main()
