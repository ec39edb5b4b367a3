"""Benchmark: generation engines on one model, without HTTP, each in a process of its own.

    python benchmarks/bench_generation_engines.py                      # SmolLM2's base model, 8 prompts x 32 tokens
    python benchmarks/bench_generation_engines.py --model-dir DIR [--tokenizer-dir DIR] --threads 2 --prompts 8

The same prompts (first user turns of the held-out conversations of samples/ultrachat_sample.jsonl, shortest first,
unless the caller passes its own), the same number of greedy new tokens (min = max, so every engine decodes exactly as
many), the same threads:
- `transformers, one by one`: `generate` on each prompt alone, one after another (what the server before 995c103 did
  with one request at a time);
- `transformers, one batch`: one `generate` call on the prompts left-padded into one batch;
- `ctranslate2 float32, one batch`: `generate_batch` on the model converted by the repository's converter
  (shared.engine.local.serving.conversion.converted, cached by content), what the deployments serve now;
- `ctranslate2 int8, one batch`: the same converted folder loaded with compute_type="int8".
Each engine runs in a child process (this script with --engine NAME), so its load time and peak RSS (its VmHWM) are
its own; a warm-up call (one prompt, 2 tokens) is excluded from the time. The answers are compared token
for token with `transformers, one by one`; where one differs, the transformers logit margin (top-1 minus top-2) at the
first differing token, on the prompt and the common prefix, says whether that token was a near-tie.

bench_local_engine.py runs this as its engines phase on the model its run trained (compare_engines, render_engines).
The results are printed and written to .state/bench/generation-engines-results.md when run by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STATE = REPO / ".state" / "bench"
RESULTS = STATE / "generation-engines-results.md"
SAMPLE = REPO / "samples" / "ultrachat_sample.jsonl"
TRAIN_ROWS = 200
BASE_MODEL_FOLDERS = (STATE / "local-engine" / "models", REPO / ".state" / "demo" / "models")
DEFAULT_MODEL = "smollm2-135m-instruct"
CONVERTED_CACHE = STATE / "local-engine" / "serving-cache"  # where the bench's engine keeps its conversions
ONE_BY_ONE, BATCH, CT2_FLOAT32, CT2_INT8 = "transformers-one-by-one", "transformers-batch", "ct2-float32", "ct2-int8"
ENGINES = (ONE_BY_ONE, BATCH, CT2_FLOAT32, CT2_INT8)
LABELS = {
    ONE_BY_ONE: "transformers `generate`, one by one",
    BATCH: "transformers `generate`, one left-padded batch",
    CT2_FLOAT32: "CTranslate2 float32, one batch",
    CT2_INT8: "CTranslate2 int8, one batch",
}
REFERENCE = ONE_BY_ONE
ENGINE_TIMEOUT_S = 900.0


# -- the children: one engine each --------------------------------------------------------------------------


Generate = Callable[[list[dict[str, Any]], int], list[list[int]]]


def transformers_engine(job: dict[str, Any], batched: bool) -> Generate:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from shared.engine.local.serving.batching import left_pad

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(job["threads"])
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    model.eval()
    pad = job["pad_id"]

    def run(rows: list[list[int]], new_tokens: int) -> list[list[int]]:
        batch = left_pad(rows, pad)
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor(batch.input_ids, dtype=torch.long),
                attention_mask=torch.tensor(batch.attention_mask, dtype=torch.long),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        width = len(batch.input_ids[0])
        return [row[width:] for row in out.tolist()]

    def generate(prompts: list[dict[str, Any]], new_tokens: int) -> list[list[int]]:
        rows = [p["ids"] for p in prompts]
        if batched:
            return run(rows, new_tokens)
        return [run([row], new_tokens)[0] for row in rows]

    return generate


def ctranslate2_engine(job: dict[str, Any], compute_type: str) -> Generate:
    import ctranslate2

    generator = ctranslate2.Generator(
        job["converted_dir"], device="cpu", compute_type=compute_type, intra_threads=job["threads"], inter_threads=1
    )

    def generate(prompts: list[dict[str, Any]], new_tokens: int) -> list[list[int]]:
        results = generator.generate_batch(
            [p["tokens"] for p in prompts],
            max_length=new_tokens,
            min_length=new_tokens,
            sampling_topk=1,
            include_prompt_in_result=False,
            return_end_token=True,
            end_token=job["eos_ids"] or None,
        )
        return [list(result.sequences_ids[0]) for result in results]

    return generate


def load_engine(name: str, job: dict[str, Any]) -> Generate:
    if name in (ONE_BY_ONE, BATCH):
        return transformers_engine(job, batched=name == BATCH)
    if name in (CT2_FLOAT32, CT2_INT8):
        return ctranslate2_engine(job, "int8" if name == CT2_INT8 else "float32")
    raise SystemExit(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")


def own_peak_rss_mb() -> float | None:
    """This process's VmHWM: its peak since exec. (ru_maxrss, from getrusage or wait4, also counts the memory the
    parent had when it forked this child: the parent's tokenizer and torch would be counted.)"""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def run_child(name: str, job_path: Path, out_path: Path) -> int:
    """The --engine side: load, warm up (excluded), decode every prompt, write the ids and times as JSON."""
    job = json.loads(job_path.read_text(encoding="utf-8"))
    started = time.perf_counter()
    generate = load_engine(name, job)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    generate(job["prompts"][:1], 2)
    warm_up_s = time.perf_counter() - started
    started = time.perf_counter()
    ids = generate(job["prompts"], job["new_tokens"])
    seconds = time.perf_counter() - started
    answer = {"engine": name, "ids": ids, "load_s": load_s, "warm_up_s": warm_up_s, "seconds": seconds}
    answer["peak_rss_mb"] = own_peak_rss_mb()
    out_path.write_text(json.dumps(answer), encoding="utf-8")
    return 0


# -- the parent: prompts, children, comparison --------------------------------------------------------------


@dataclass
class EngineRun:
    engine: str
    ids: list[list[int]] = field(default_factory=list)
    load_s: float = 0.0
    seconds: float = 0.0
    peak_rss_mb: float | None = None
    cpu_s: float | None = None
    other_cpu: float = 0.0
    quiet: str = ""
    error: str | None = None

    @property
    def tokens(self) -> int:
        return sum(len(row) for row in self.ids)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class Difference:
    """Where two greedy answers to one prompt part: the first differing token and how close a call it was."""

    prompt: int
    position: int  # index of the first differing new token
    margin: float | None  # transformers' top-1 minus top-2 logit there (None: not computed)
    top: str = ""  # the two top tokens there, as text


@dataclass
class EnginesReport:
    model_dir: str
    prompts: int
    new_tokens: int
    threads: int
    conversion: str = ""
    runs: list[EngineRun] = field(default_factory=list)
    differences: dict[str, list[Difference]] = field(default_factory=dict)
    failure: str | None = None

    def run(self, engine: str) -> EngineRun | None:
        return next((r for r in self.runs if r.engine == engine and r.error is None), None)


def default_model_dir() -> Path | None:
    for folder in BASE_MODEL_FOLDERS:
        if (folder / DEFAULT_MODEL / "config.json").exists():
            return folder / DEFAULT_MODEL
    return None


def held_out_first_turns(count: int) -> list[list[dict[str, str]]]:
    """The first user turn of each held-out conversation (the lines after the first TRAIN_ROWS), shortest first."""
    turns = []
    for line in SAMPLE.read_bytes().splitlines()[TRAIN_ROWS:]:
        first = next((m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"), None)
        if first:
            turns.append([{"role": "user", "content": first}])
    return sorted(turns, key=lambda conversation: len(conversation[0]["content"]))[:count]


def load_tokenizer(folder: Path) -> Any:
    import transformers
    from transformers import AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    return AutoTokenizer.from_pretrained(str(folder))


def chat_ids(tokenizer: Any, conversation: list[dict[str, str]]) -> list[int]:
    """The prompt as the deployments encode it: the chat template with the generation prompt."""
    encoded = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=True)
    return list(encoded["input_ids"])


def model_ids(model_dir: Path, tokenizer: Any) -> tuple[int, list[int]]:
    """(pad id, end ids) as the deployment server reads them: the generation config's eos, else the model's."""

    def read(name: str) -> dict[str, Any]:
        try:
            return json.loads((model_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    config, generation = read("config.json"), read("generation_config.json")
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    eos_ids = sorted(i for i in (eos if isinstance(eos, list) else [eos]) if isinstance(i, int))
    if not eos_ids and tokenizer.eos_token_id is not None:
        eos_ids = [tokenizer.eos_token_id]
    pad = generation.get("pad_token_id", config.get("pad_token_id", tokenizer.pad_token_id))
    return (pad if isinstance(pad, int) else (eos_ids[0] if eos_ids else 0)), eos_ids


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_engine_process(engine: str, job_path: Path, threads: int, quiet_wait_s: float) -> EngineRun:
    """This script with --engine, waited for with wait4 (its CPU); its peak RSS is the VmHWM it reports."""
    from bench_local_engine import OtherCpu, wait_for_quiet

    result = EngineRun(engine=engine)
    out_path = job_path.with_name(f"{engine}.json")
    log_path = job_path.with_name(f"{engine}.log")
    result.quiet = wait_for_quiet(quiet_wait_s) if quiet_wait_s > 0 else "not waited for"
    other = OtherCpu(lambda: 0.0)
    command = [sys.executable, str(Path(__file__).resolve()), "--engine", engine, "--job", str(job_path)]
    command += ["--out", str(out_path)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=child_env(threads), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + ENGINE_TIMEOUT_S
    while True:
        done, status, usage = os.wait4(process.pid, os.WNOHANG)
        if done == process.pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            done, status, usage = os.wait4(process.pid, 0)
            result.error = f"still running after {ENGINE_TIMEOUT_S:.0f} s: killed"
            break
        time.sleep(0.1)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    result.peak_rss_mb = usage.ru_maxrss / 1024
    result.cpu_s = usage.ru_utime + usage.ru_stime
    other.stop(tracked_total=result.cpu_s)
    result.other_cpu = other.share
    if result.error is None and process.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-3:]
        result.error = f"exit {process.returncode}: {' | '.join(tail)}"
    if result.error is None:
        answer = json.loads(out_path.read_text(encoding="utf-8"))
        result.ids, result.load_s, result.seconds = answer["ids"], answer["load_s"], answer["seconds"]
        result.peak_rss_mb = answer.get("peak_rss_mb") or result.peak_rss_mb
    return result


class MarginModel:
    """transformers' view of a position: the top-1 minus top-2 logit after a prompt and a prefix of an answer."""

    def __init__(self, model_dir: Path, tokenizer: Any, threads: int | None = None) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.tokenizer = tokenizer
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.eval()

    def margin(self, ids: list[int], suppressed: Sequence[int] = ()) -> tuple[float, str]:
        """(top-1 minus top-2 logit, 'top1 | top2' as text) for the token after `ids`; `suppressed` ids (an end
        token that min_new_tokens forbids there) are left out, as generate leaves them out."""
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0, -1].float()
            if suppressed:
                logits[list(suppressed)] = float("-inf")
            values, indices = torch.topk(logits, 2)
        top = " | ".join(repr(self.tokenizer.decode([int(i)])) for i in indices.tolist())
        return float(values[0] - values[1]), top


def first_difference(reference: Sequence[int], other: Sequence[int]) -> int | None:
    """The index of the first token where the two differ (one ending earlier counts), None when identical."""
    for index, (a, b) in enumerate(zip(reference, other, strict=False)):
        if a != b:
            return index
    return None if len(reference) == len(other) else min(len(reference), len(other))


def difference(
    margins: MarginModel, prompt: int, prompt_ids: list[int], reference: list[int], other: list[int], suppress: Any
) -> Difference | None:
    """The Difference between two answers (token ids) to one prompt, None when they are identical. `suppress(position)`:
    the ids generate could not choose at that position."""
    position = first_difference(reference, other)
    if position is None:
        return None
    margin, top = margins.margin(prompt_ids + list(reference[:position]), suppress(position))
    return Difference(prompt=prompt, position=position, margin=margin, top=top)


def compare_engines(
    model_dir: Path,
    tokenizer_dir: Path | None,
    conversations: list[list[dict[str, str]]],
    *,
    new_tokens: int = 32,
    threads: int = 2,
    cache_dir: Path = CONVERTED_CACHE,
    quiet_wait_s: float = 60.0,
    engines: Sequence[str] = ENGINES,
    log: Callable[[str], None] = print,
) -> EnginesReport:
    """Every engine on the same prompts, one process each, then their answers compared with the reference's."""
    from shared.engine.local.serving.conversion import converted

    report = EnginesReport(str(model_dir), len(conversations), new_tokens, threads)
    tokenizer = load_tokenizer(tokenizer_dir or model_dir)
    pad_id, eos_ids = model_ids(model_dir, tokenizer)
    prompts = []
    for conversation in conversations:
        ids = chat_ids(tokenizer, conversation)
        prompts.append({"ids": ids, "tokens": list(tokenizer.convert_ids_to_tokens(ids))})
    job: dict[str, Any] = {"model_dir": str(model_dir), "pad_id": pad_id, "eos_ids": eos_ids}
    job.update(prompts=prompts, new_tokens=new_tokens, threads=threads, converted_dir=None)
    if any(engine.startswith("ct2") for engine in engines):
        source, how = convertible(model_dir, tokenizer_dir, cache_dir.parent / "engines-models")
        started = time.monotonic()
        cached = (cache_dir / _cache_key(source) / "model.bin").exists()
        try:
            job["converted_dir"] = str(converted(source, cache_dir))
            report.conversion = "cached" if cached else f"converted in {time.monotonic() - started:.1f} s"
        except RuntimeError as exc:
            report.conversion = f"failed: {exc}"
        report.conversion += how
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as scratch:
        job_path = Path(scratch) / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        for engine in engines:
            log(f"  engine {engine} ...")
            if engine.startswith("ct2") and job["converted_dir"] is None:
                report.runs.append(EngineRun(engine=engine, error=f"no conversion ({report.conversion})"))
                continue
            run = run_engine_process(engine, job_path, threads, quiet_wait_s)
            report.runs.append(run)
            log(f"    {run.error or f'{run.seconds:.2f} s, {run.tokens_per_s:.1f} tokens/s'}")
    reference = report.run(REFERENCE)
    if reference is None:
        report.failure = f"the reference ({REFERENCE}) did not run"
        return report
    margins = MarginModel(model_dir, tokenizer, threads)

    def suppress(position: int) -> list[int]:  # min_new_tokens = new_tokens: no end token before the last
        return eos_ids if position < new_tokens else []

    for run in report.runs:
        if run.error is None and run.engine != REFERENCE:
            report.differences[run.engine] = [
                found
                for index, (prompt, ours) in enumerate(zip(prompts, run.ids, strict=True))
                if (found := difference(margins, index, prompt["ids"], reference.ids[index], ours, suppress))
            ]
    return report


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def convertible(model_dir: Path, tokenizer_dir: Path | None, links_root: Path) -> tuple[Path, str]:
    """A folder CTranslate2's converter can read: `model_dir` itself when it holds a tokenizer, else a folder of
    links to its files and the tokenizer's (a registered model keeps its tokenizer apart, in components/tokenizer,
    and the converter reads the tokenizer from the model folder). The second item says which, for the report."""
    if tokenizer_dir is None or any((model_dir / name).exists() for name in TOKENIZER_FILES):
        return model_dir, ""
    folder = links_root / _cache_key(model_dir)
    if not (folder / "config.json").exists():
        partial = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for source in (tokenizer_dir, model_dir):  # the model's own files win
            for path in source.iterdir():
                if path.is_file():
                    (partial / path.name).unlink(missing_ok=True)
                    (partial / path.name).symlink_to(path.resolve())
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder, " (from links to the weights and the tokenizer beside them: the model folder has no tokenizer)"


def _cache_key(model_dir: Path) -> str:
    from shared.engine.local.serving.conversion import cache_key

    return cache_key(model_dir)


# -- report -------------------------------------------------------------------------------------------------


def describe_differences(differences: list[Difference]) -> str:
    if not differences:
        return ""
    return "; ".join(
        f"prompt {d.prompt} at token {d.position}: margin "
        + (f"{d.margin:.4f}" if d.margin is not None else "n/a")
        + (f" ({d.top})" if d.top else "")
        for d in differences
    )


def render_engines(report: EnginesReport) -> list[str]:
    lines = [
        f"{report.prompts} prompts x {report.new_tokens} greedy new tokens (min = max), {report.threads} threads "
        f"(torch `set_num_threads`, CTranslate2 `intra_threads`, OMP/MKL_NUM_THREADS), each engine in a process of "
        f"its own. Model: `{_shown(report.model_dir)}`; CTranslate2 conversion: {report.conversion or 'not needed'}.",
        "",
        "| engine | load (s) | time (s) | new tokens | tokens/s | vs one by one | peak RSS (MB) "
        "| identical to one by one | other CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    reference = report.run(REFERENCE)
    for run in report.runs:
        label = LABELS.get(run.engine, run.engine)
        if run.error is not None:
            lines.append(f"| {label} | failed: {run.error[:200]} |" + " |" * 7)
            continue
        speed = f"{run.tokens_per_s / reference.tokens_per_s:.2f}x" if reference and reference.tokens_per_s else "n/a"
        if run.engine == REFERENCE:
            same = "(reference)"
        elif run.engine in report.differences:
            same = f"{len(run.ids) - len(report.differences[run.engine])} of {len(run.ids)}"
        else:
            same = "n/a"
        lines.append(
            f"| {label} | {run.load_s:.1f} | {run.seconds:.2f} | {run.tokens} | {run.tokens_per_s:.1f} | {speed} "
            f"| {run.peak_rss_mb or 0:,.0f} | {same} | {run.other_cpu:.0%} |"
        )
    lines += [
        "",
        "- time: the decoding of every prompt (after the model loaded and one warm-up call of 2 tokens); tokens/s: "
        "the new tokens over that time. Peak RSS: the child's VmHWM at its end (interpreter, imports, weights; the "
        "prompt tokens come from the parent, so no tokenizer). Other CPU: what other processes used meanwhile, in "
        "shares of one CPU.",
        "- identical: the same new token ids as `generate` one by one. Where an answer differs, the margin is the "
        "transformers logit of its top-1 minus its top-2 token at the first differing position (after the prompt "
        "and the common prefix): a near-tie when it is small.",
    ]
    for engine, differences in report.differences.items():
        if differences:
            lines.append(f"- {LABELS.get(engine, engine)} differs: {describe_differences(differences)}")
    for run in report.runs:
        if run.error is None:
            lines.append(f"- {LABELS.get(run.engine, run.engine)}: before it, {run.quiet}; CPU {run.cpu_s or 0:.1f} s")
    if report.failure:
        lines.append(f"- FAILED: {report.failure}")
    return lines


def _shown(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # the child side
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, default=None, help="a Hugging Face folder (default: SmolLM2's)")
    parser.add_argument("--tokenizer-dir", type=Path, default=None)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, from " + ", ".join(ENGINES))
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.engine:
        return run_child(args.engine, args.job, args.out)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    model_dir = args.model_dir or default_model_dir()
    if model_dir is None:
        raise SystemExit(f"no {DEFAULT_MODEL} folder in {', '.join(map(str, BASE_MODEL_FOLDERS))}: pass --model-dir")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    report = compare_engines(
        model_dir.resolve(),
        args.tokenizer_dir,
        held_out_first_turns(args.prompts),
        new_tokens=args.new_tokens,
        threads=args.threads,
        quiet_wait_s=args.quiet_wait,
        engines=engines,
    )
    text = "\n".join(["# Generation engines", "", *render_engines(report), ""])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"(written to {RESULTS.relative_to(REPO)})")
    return 1 if report.failure or any(run.error for run in report.runs) else 0


if __name__ == "__main__":
    sys.exit(main())
