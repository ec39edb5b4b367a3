"""Benchmark: validate + split + hash a chat JSONL file, against pandas and against a bare parse loop.

    python benchmarks/bench_validate.py                 # 500 MB file, 3 rounds; see benchmarks/README.md
    python benchmarks/bench_validate.py --mb 100 --repeat 5 --keep

Each contender runs in a subprocess of its own (this script with --contender), so its peak RSS is its
own; the parent runs them in turns, `--repeat` rounds, and reports the fastest round of each. The
targets (from the issue): ours reaches at least 40% of the bare loop's throughput and 5x pandas's, with
a peak RSS of at most 200 MB whatever the file size.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from shared.domain.chatdata import ValidationReport

STATE = REPO / ".state" / "bench"
GENERATOR = REPO / "benchmarks" / "make_chat_jsonl.py"  # the workplace's ../shared/bench generator, copied
RESULTS = STATE / "validate-results.md"
MIB = 1024 * 1024
CHUNK_BYTES = 4 * MIB  # what the blob intake reads at a time
WRITE_BUFFER = MIB
TEST_FRACTION = 0.1
MAX_SEQ_LENGTH = 2048

MIN_SHARE_OF_BARE = 0.40
MIN_SPEEDUP_OVER_PANDAS = 5.0
MAX_PEAK_RSS_MB = 200.0
PROBE_ROWS = 1_000_000  # more than ValidationOptions.duplicate_check_rows, so its memory bound is reached
BUSY_SHARE = 0.10  # of one CPU, used by other processes (or stolen) while the contenders ran

CONTENDERS = ("ours", "ours-nosink", "bare", "pandas")
DESCRIPTIONS = {
    "ours": "chatdata: validate + stats + split + sha256, valid lines into the intake's SplitSpool (temp files)",
    "ours-nosink": "the same without writing the lines (for reference: the validator's own cost)",
    "bare": "`for line in open(f, 'rb'): orjson.loads(line)`, nothing else",
    "pandas": "pandas.read_json(lines=True), the same checks, split and sha256, to_json(lines=True)",
}


# -- contenders (each in its own process) ----------------------------------------------------------


def run_ours(path: Path, out_dir: Path, write: bool = True) -> dict:
    from shared.domain.chatdata import Split, ValidationOptions, validate_chunks

    def chunks() -> Iterator[bytes]:
        with open(path, "rb", buffering=0) as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk

    options = ValidationOptions(test_fraction=TEST_FRACTION, max_seq_length=MAX_SEQ_LENGTH)
    if not write:
        report = validate_chunks(chunks(), options)
        return _ours_result(report)
    # Exactly what the intake does: the valid lines go to its SplitSpool (temporary files past 8 MB).
    from shared.adapters.spool import SplitSpool

    with SplitSpool() as spool:
        report = validate_chunks(chunks(), options, on_example=spool.add)
        for split in Split:
            spool.rewound(split)  # flushes what is still buffered
    return _ours_result(report)


def _ours_result(report: ValidationReport) -> dict:
    return {
        "rows": report.rows,
        "valid_rows": report.split.train + report.split.test,
        "train": report.split.train,
        "test": report.split.test,
        "sha256": report.sha256,
        "valid": report.valid,
    }


def run_bare(path: Path, out_dir: Path) -> dict:
    import orjson

    rows = 0
    with open(path, "rb") as file:
        for line in file:
            orjson.loads(line)
            rows += 1
    return {"rows": rows}


def run_pandas(path: Path, out_dir: Path) -> dict:
    """The notebook's way: load the whole file into a DataFrame, check with apply/explode/groupby."""
    from hashlib import blake2b

    import orjson
    import pandas as pd

    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            sha.update(chunk)

    df = pd.read_json(path, lines=True)
    messages = df["messages"]
    is_list = messages.map(lambda value: isinstance(value, list))
    counts = messages.map(lambda value: len(value) if isinstance(value, list) else 0)

    # one row per message, indexed by the example's row
    exploded = messages[is_list].explode()
    is_dict = exploded.map(lambda value: isinstance(value, dict))
    roles = exploded.map(lambda value: value.get("role") if isinstance(value, dict) else None)
    contents = exploded.map(lambda value: value.get("content") if isinstance(value, dict) else None)
    keys_ok = exploded.map(lambda value: isinstance(value, dict) and {"role", "content"} <= value.keys() <= ALLOWED)
    content_ok = contents.map(lambda value: isinstance(value, str) and not value.isspace() and value != "")
    position = exploded.groupby(level=0).cumcount()
    role_ok = roles.isin(["user", "assistant"]) | ((roles == "system") & (position == 0))
    message_ok = (is_dict & keys_ok & content_ok & role_ok).groupby(level=0).all()
    has_user = (roles == "user").groupby(level=0).any()
    last_is_assistant = roles.groupby(level=0).last() == "assistant"

    ok = is_list & (counts >= 2)
    ok &= message_ok.reindex(df.index, fill_value=False)
    ok &= has_user.reindex(df.index, fill_value=False)
    ok &= last_is_assistant.reindex(df.index, fill_value=False)
    valid = df[ok]

    # stats and warnings over the valid examples (exploded rows repeat their example's label: mask by position)
    of_valid = ok.reindex(exploded.index).to_numpy()
    lengths = contents[of_valid].str.len()
    characters = lengths.groupby(level=0).sum()
    assistant_characters = lengths[(roles[of_valid] == "assistant").to_numpy()].groupby(level=0).sum()
    tokens = -(-characters // 4) + 4 * counts[ok]
    stats = {
        name: series.describe(percentiles=[0.5, 0.95]).to_dict()
        for name, series in {
            "messages": counts[ok],
            "characters": characters,
            "tokens": tokens,
            "assistant_characters": assistant_characters,
            "assistant_tokens": -(-assistant_characters // 4),
        }.items()
    }
    too_long = int((tokens > MAX_SEQ_LENGTH).sum())
    duplicate_prompt_ids = int(valid["prompt_id"].duplicated().sum()) if "prompt_id" in valid else 0
    conversations = valid["messages"].map(lambda value: tuple((m["role"], m["content"]) for m in value))
    duplicate_conversations = int(conversations.duplicated().sum())

    # the same deterministic split as ours: blake2b of the prompt id (else of the messages) against a threshold
    threshold = int(TEST_FRACTION * 2**64)
    prompt_ids = valid["prompt_id"] if "prompt_id" in valid else pd.Series(None, index=valid.index)
    keys = [
        prompt_id.encode() if isinstance(prompt_id, str) and prompt_id else orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
        for prompt_id, m in zip(prompt_ids, valid["messages"], strict=True)
    ]
    buckets = pd.Series(
        [int.from_bytes(blake2b(key, digest_size=8).digest(), "big") for key in keys], index=valid.index
    )
    is_test = buckets < threshold
    valid[~is_test].to_json(out_dir / "train.jsonl", orient="records", lines=True, force_ascii=False)
    valid[is_test].to_json(out_dir / "test.jsonl", orient="records", lines=True, force_ascii=False)
    return {
        "rows": len(df),
        "valid_rows": len(valid),
        "train": int((~is_test).sum()),
        "test": int(is_test.sum()),
        "sha256": sha.hexdigest(),
        "warnings": {
            "exceeds_max_seq_length": too_long,
            "duplicate_prompt_id": duplicate_prompt_ids,
            "duplicate_conversation": duplicate_conversations,
        },
        "stats_measures": len(stats),
    }


ALLOWED = frozenset({"role", "content", "name"})

RUNNERS: dict[str, Callable[[Path, Path], dict]] = {
    "ours": run_ours,
    "ours-nosink": lambda path, out_dir: run_ours(path, out_dir, write=False),
    "bare": run_bare,
    "pandas": run_pandas,
}


# imported before the clock starts: a notebook or a function host has them loaded already
IMPORTS = {
    "ours": ("shared.domain.chatdata",),
    "ours-nosink": ("shared.domain.chatdata",),
    "bare": ("orjson",),
    "pandas": ("orjson", "pandas"),
}


def contender_main(name: str, path: Path) -> None:
    """Child process: run one contender once, print one JSON line."""
    for module in IMPORTS[name]:
        importlib.import_module(module)
    start_rss_mb = _rss_mb()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as out_dir:
        started = time.perf_counter()
        result = RUNNERS[name](path, Path(out_dir))
        seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "contender": name,
                "seconds": seconds,
                "bytes": path.stat().st_size,
                "peak_rss_mb": peak_kib / 1024,
                "start_rss_mb": start_rss_mb,
                **result,
            }
        )
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


# -- the parent --------------------------------------------------------------------------------------


def dataset(args: argparse.Namespace) -> tuple[Path, bool]:
    """The file to measure, and whether this run made it (so it may delete it)."""
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            sys.exit(f"no such file: {path}")
        return path, False
    path = STATE / f"chat-{args.mb:g}mb.jsonl"
    limit = int(args.mb * MIB)
    # the generator stops at the first line past the limit: a complete file is at most one line longer
    if path.is_file() and limit <= path.stat().st_size < limit + MIB:
        print(f"reusing {path} ({path.stat().st_size / MIB:.1f} MiB)", flush=True)
        return path, False
    if not GENERATOR.is_file():
        sys.exit(f"the generator is missing: {GENERATOR}")
    STATE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    print(f"generating {path} ({args.mb:g} MB) with {GENERATOR} ...", flush=True)
    subprocess.run(
        [sys.executable, str(GENERATOR), "--mb", str(args.mb), "--seed", "0", "--out", str(partial)], check=True
    )
    partial.replace(path)
    return path, True


def run_contender(name: str, path: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--contender", name, "--file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"contender {name} failed ({completed.returncode}):\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def warm_page_cache(path: Path) -> None:
    """Read the file once so every contender, the first one too, reads it from the page cache."""
    with open(path, "rb", buffering=0) as file:
        while file.read(16 * MIB):
            pass


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    summary = {}
    for name, results in runs.items():
        best = min(results, key=lambda result: result["seconds"])
        seconds = best["seconds"]
        summary[name] = {
            **best,
            "median_seconds": statistics.median(result["seconds"] for result in results),
            "all_seconds": [result["seconds"] for result in results],
            "mb_per_s": best["bytes"] / MIB / seconds,
            "rows_per_s": best["rows"] / seconds,
            "peak_rss_mb": max(result["peak_rss_mb"] for result in results),
        }
    return summary


class CpuShare:
    """How much CPU other processes used (and the hypervisor stole) while this one and its children ran."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._start = (time.monotonic(), psutil.cpu_times(), self._own())
        self.other_share = self.steal_share = 0.0

    def stop(self) -> None:
        started, cpu, own = self._start
        now = self._psutil.cpu_times()
        elapsed = time.monotonic() - started
        busy = self._busy(now) - self._busy(cpu)
        steal = getattr(now, "steal", 0.0) - getattr(cpu, "steal", 0.0)
        self.other_share = max(0.0, busy - (self._own() - own)) / elapsed
        self.steal_share = steal / elapsed

    @staticmethod
    def _busy(times: Any) -> float:
        return sum(getattr(times, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq"))

    @staticmethod
    def _own() -> float:
        return sum(
            usage.ru_utime + usage.ru_stime
            for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        )


def small_rows_file(rows: int) -> tuple[Path, bool]:
    """Many short, distinct conversations: the most rows a megabyte, so the duplicate check fills up."""
    path = STATE / f"small-rows-{rows}.jsonl"
    if path.is_file():
        return path, False
    import orjson

    STATE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb", buffering=MIB) as file:
        for index in range(rows):
            question = f"Question number {index}: what comes after {index}?"
            row = {
                "prompt": question,
                "prompt_id": hashlib.sha256(question.encode()).hexdigest(),
                "messages": [{"content": question, "role": "user"}, {"content": f"{index + 1}.", "role": "assistant"}],
            }
            file.write(orjson.dumps(row) + b"\n")
    partial.replace(path)
    return path, True


def targets(summary: dict[str, dict], probe: dict | None) -> list[tuple[str, str, str, bool]]:
    """(target, measured, goal, met) for each target whose contenders were run."""
    rows = []
    ours = summary.get("ours")
    if ours and "bare" in summary:
        share = ours["mb_per_s"] / summary["bare"]["mb_per_s"]
        rows.append(
            ("ours / bare throughput", f"{share:.2f}", f">= {MIN_SHARE_OF_BARE:.2f}", share >= MIN_SHARE_OF_BARE)
        )
    if ours and "pandas" in summary:
        speedup = ours["mb_per_s"] / summary["pandas"]["mb_per_s"]
        rows.append(
            (
                "ours / pandas speedup",
                f"{speedup:.1f}x",
                f">= {MIN_SPEEDUP_OVER_PANDAS:.0f}x",
                speedup >= MIN_SPEEDUP_OVER_PANDAS,
            )
        )
    goal = f"<= {MAX_PEAK_RSS_MB:.0f} MB"
    if ours:
        rss = ours["peak_rss_mb"]
        rows.append(("ours peak RSS", f"{rss:.0f} MB", goal, rss <= MAX_PEAK_RSS_MB))
    if probe:
        rss = probe["peak_rss_mb"]
        label = f"ours peak RSS, {probe['rows']:,} small rows (duplicate check full)"
        rows.append((label, f"{rss:.0f} MB", goal, rss <= MAX_PEAK_RSS_MB))
    return rows


def consistency(summary: dict[str, dict]) -> list[str]:
    """What the contenders that do the same job must agree on."""
    notes = []
    ours, pandas = summary.get("ours"), summary.get("pandas")
    if ours and pandas:
        for key in ("rows", "valid_rows", "train", "test", "sha256"):
            if ours[key] != pandas[key]:
                notes.append(f"ours and pandas disagree on {key}: {ours[key]} != {pandas[key]}")
    rows = {name: result["rows"] for name, result in summary.items()}
    if len(set(rows.values())) > 1:
        notes.append(f"row counts differ: {rows}")
    return notes


def render(path: Path, summary: dict[str, dict], probe: dict | None, repeat: int, others: CpuShare) -> str:
    size = path.stat().st_size
    first = next(iter(summary.values()))
    lines = [
        "# Validator benchmark",
        "",
        f"- When: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- File: `{path.name}`, {size / MIB:.1f} MiB, {first['rows']:,} rows",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}",
        f"- Other processes used {others.other_share:.0%} of one CPU during the rounds"
        + (f", and the hypervisor stole {others.steal_share:.0%}" if others.steal_share >= 0.01 else ""),
        f"- Each contender in its own process, {repeat} round(s), in turns; times are the fastest round "
        "(median beside it), peak RSS the largest round's. The file is read from the page cache.",
    ]
    if others.other_share + others.steal_share > BUSY_SHARE:
        lines.append("- **The machine was not quiet: these times are less reliable than usual.**")
    lines += [
        "",
        "| contender | seconds (best) | seconds (median) | MB/s | rows/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rendered = dict(summary)
    if probe:
        rendered[f"ours, {probe['rows']:,} small rows"] = probe
    for name, result in rendered.items():
        lines.append(
            f"| {name} | {result['seconds']:.2f} | {result['median_seconds']:.2f} | {result['mb_per_s']:.0f} | "
            f"{result['rows_per_s']:,.0f} | {result['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| target | measured | goal | result |", "|---|---:|---:|---|"]
    for target, measured, goal, met in targets(summary, probe):
        lines.append(f"| {target} | {measured} | {goal} | {'PASS' if met else 'FAIL'} |")
    lines += ["", "Contenders:", ""]
    lines += [f"- `{name}`: {DESCRIPTIONS[name]}" for name in summary]
    if probe:
        lines.append(
            f"- small rows: `ours` once on {probe['bytes'] / MIB:.0f} MiB of two-message conversations, more "
            "distinct rows than the duplicate check remembers, to show its memory bound (the big file has too few "
            "rows to reach it)"
        )
    notes = consistency(summary)
    lines += ["", "Consistency: " + ("; ".join(notes) if notes else "row counts, split and sha256 agree.")]
    lines += [
        "",
        "All rounds (seconds): "
        + "; ".join(
            f"{name} " + ", ".join(f"{s:.2f}" for s in result["all_seconds"]) for name, result in summary.items()
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=500, help="size of the generated file (default 500)")
    parser.add_argument("--file", help="measure this JSONL file instead of a generated one")
    parser.add_argument("--keep", action="store_true", help=f"keep the generated files in {STATE} for the next run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every contender (default 3)")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help=f"comma-separated, of {', '.join(CONTENDERS)} (default all)"
    )
    parser.add_argument(
        "--probe-rows",
        type=int,
        default=PROBE_ROWS,
        help=f"rows of the small-rows memory probe (default {PROBE_ROWS:,}; 0 skips it)",
    )
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args(argv)

    if args.contender:
        contender_main(args.contender, Path(args.file))
        return 0

    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    if unknown := sorted(set(names) - set(CONTENDERS)):
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    path, generated = dataset(args)
    probe = None
    try:
        warm_page_cache(path)
        others = CpuShare()
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for round_no in range(1, args.repeat + 1):
            for name in names:
                result = run_contender(name, path)
                runs[name].append(result)
                print(
                    f"round {round_no}/{args.repeat} {name:12s} {result['seconds']:7.2f} s  "
                    f"peak RSS {result['peak_rss_mb']:6.0f} MB",
                    flush=True,
                )
        others.stop()
    finally:
        if generated and not args.keep:
            path.unlink(missing_ok=True)
    if args.probe_rows > 0 and "ours" in names:
        probe_path, probe_generated = small_rows_file(args.probe_rows)
        try:
            warm_page_cache(probe_path)
            probe = summarize({"probe": [run_contender("ours", probe_path)]})["probe"]
            print(f"small rows   ours {probe['seconds']:7.2f} s  peak RSS {probe['peak_rss_mb']:6.0f} MB", flush=True)
        finally:
            if probe_generated and not args.keep:
                probe_path.unlink(missing_ok=True)
    summary = summarize(runs)
    text = render(path, summary, probe, args.repeat, others)
    STATE.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print()
    print(text)
    print(f"(written to {RESULTS})")
    return 0 if all(met for *_, met in targets(summary, probe)) else 1


if __name__ == "__main__":
    sys.exit(main())
