#!/usr/bin/env python3
"""Write an ultrachat_200k-shaped JSONL file of synthetic conversations, for benchmarks.

Each line: {"prompt": str, "prompt_id": sha256 hex, "messages": [{"content": str, "role": "user"|"assistant"}, ...]}
The size and turn distribution roughly follow ultrachat's train_sft split (1-4 user/assistant exchanges,
multi-paragraph assistant answers). Deterministic for a given --seed.

A copy of the workplace's ../shared/bench/make_chat_jsonl.py (same words, same output), kept here so that
`make bench` works on a fresh clone.

    python make_chat_jsonl.py --rows 207865 --out train_sft.jsonl      # about 700 MB, the full split's row count
    python make_chat_jsonl.py --mb 500 --out big.jsonl                 # stop at about 500 MB
"""

import argparse
import hashlib
import json
import random

WORDS = (  # noqa: SIM905 (kept as in the workplace's generator: one string, split)
    "the of and to in is you that it he was for on are as with his they at be this have from or one had "
    "by word but not what all were we when your can said there use an each which she do how their if "
    "will up other about out many then them these so some her would make like him into time has look two "
    "more write go see number no way could people my than first water been call who oil its now find "
    "long down day did get come made may part model data train answer question because system energy "
    "city history music policy science children climate market travel health recipe"
).split()


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))).capitalize() + "."


def paragraph(rng):
    return " ".join(sentence(rng) for _ in range(rng.randint(2, 7)))


def conversation(rng):
    messages = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
        messages.append({"content": paragraph(rng), "role": "user"})
        answer = "\n\n".join(paragraph(rng) for _ in range(rng.randint(1, 4)))
        messages.append({"content": answer, "role": "assistant"})
    prompt = messages[0]["content"]
    return {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(), "messages": messages}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--mb", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.rows is None and args.mb is None:
        parser.error("give --rows or --mb")
    rng = random.Random(args.seed)
    limit = None if args.mb is None else int(args.mb * 1024 * 1024)
    written = rows = 0
    with open(args.out, "w", encoding="utf-8") as out:
        while (args.rows is None or rows < args.rows) and (limit is None or written < limit):
            line = json.dumps(conversation(rng), ensure_ascii=False) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
            rows += 1
    print(f"{rows} rows, {written / 1048576:.1f} MiB -> {args.out}")


if __name__ == "__main__":
    main()
