"""Benchmark: the local engine's training, and its endpoint against the server before it and `mlflow models serve`.

    python benchmarks/bench_local_engine.py                   # tiny and SmolLM2, 1 and 8 clients (about 30 minutes)
    python benchmarks/bench_local_engine.py --models tiny --requests 3 --engines-model none
    python benchmarks/bench_local_engine.py --clients 1,4,8 --baseline-ref '' --strict

In one run, with one LocalEngine over a real Azurite (state in .state/bench/local-engine/, reused across runs so
the SmolLM2 conversion is cached):
1. training: for each model, a job on the first 200 conversations of samples/ultrachat_sample.jsonl (the other
   40 are the test split), with the engine's preset (parameters_for(LOCAL_PRESETS[model])); SmolLM2 is bounded with
   max_steps. Tokens/s come from the job's metrics.json; the job's wall time and the worker's peak RSS are
   measured here (the worker is this process's child: its exact ru_maxrss comes from wait4).
2. serving: the trained model is registered, deployed on a local endpoint (100% traffic) and measured at each
   --clients count with concurrent keep-alive clients on POST /score; then the endpoint is deleted, and the same
   registered version is served by the router and deployment server of --baseline-ref (a git worktree: the server
   before this one) and measured the same way, then by `mlflow models serve --env-manager local` on POST
   /invocations. Every request: the same prompts, 32 new tokens, greedy.
3. held-out answers: ours and the baseline answer every held-out conversation (up to its last user turn, 64 greedy
   new tokens); the share of identical answers, and for the others transformers' logit margin where they part.
4. engines: SmolLM2 without HTTP (bench_generation_engines.py): transformers one by one and batched, CTranslate2
   float32 and int8, each in a process of its own.
5. targets (the issue's, for SmolLM2 at 8 clients), reported PASS/FAIL; enforced only with --strict.
Warm-up requests are excluded; the servers are measured one at a time. The table is printed and written to
.state/bench/local-engine-results.md. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, Path(__file__).resolve().parent):  # the repo, installed or not; bench_generation_engines.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

STATE = REPO / ".state" / "bench"
ENGINE_STATE = STATE / "local-engine"
RESULTS = STATE / "local-engine-results.md"
SAMPLE = REPO / "samples" / "ultrachat_sample.jsonl"
CONVERSION_CACHES = (REPO / ".state" / "demo" / "models",)  # where an earlier conversion may be copied from
TRAIN_ROWS = 200
TINY, SMOLLM2 = "tiny", "smollm2-135m-instruct"
SHORT_NAMES = {TINY: "tiny", SMOLLM2: "smollm2"}
DEFAULT_REQUESTS = {TINY: 25, SMOLLM2: 6}  # per client
PROMPTS = 8  # prompts chosen for the load (at least one per client), the first 8 for the engines phase
NEW_TOKENS = 32
HELD_OUT_NEW_TOKENS = 64
NEAR_TIE_LOGIT = 0.05  # a top-1 minus top-2 logit margin at most this: two tokens float noise can swap
DEPLOYMENT = "blue"
BASELINE_REF = "1add31a"  # the last commit with the http.server stack (one generate at a time, transformers)
TARGET_MODEL, TARGET_CLIENTS = SMOLLM2, 8
TARGET_RPS_X, TARGET_P50_X, TARGET_RSS_BYTES, TARGET_IDENTICAL = 4.0, 0.4, 1.2e9, 0.90
JOB_TIMEOUT_S = 1800.0
SERVER_START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 600.0
MIB = 1024 * 1024


# -- processes: memory and CPU ----------------------------------------------------------------------------


def vm_kb(pid: int | None, name: str) -> int | None:
    """A Vm* line of /proc/<pid>/status in kB (VmHWM: peak resident set, VmRSS: current), None when gone."""
    if not pid:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def cpu_seconds(pid: int | None) -> float | None:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, ValueError, TypeError):
        return None
    return times.user + times.system


def process_tree(pid: int) -> list[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def wait_child(pid: int, timeout_s: float) -> tuple[float, float] | None:
    """(peak RSS MB, CPU seconds) of a child of this process once it exits, from wait4; None if not ours/reaped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done == pid:
            return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
        time.sleep(0.1)
    return None


class OtherCpu:
    """How much CPU processes other than this one and the tracked ones used during a phase (share of one CPU)."""

    def __init__(self, tracked: Callable[[], float]) -> None:
        import psutil

        self._psutil = psutil
        self._tracked = tracked
        self._start = (time.monotonic(), self._busy(), self._self_cpu(), tracked())
        self.share = 0.0
        self.load_before = os.getloadavg()
        self.load_after = self.load_before

    def stop(self, tracked_total: float | None = None) -> None:
        started, busy, own, tracked = self._start
        elapsed = max(1e-9, time.monotonic() - started)
        used_by_tracked = (tracked_total if tracked_total is not None else self._tracked()) - tracked
        others = (self._busy() - busy) - (self._self_cpu() - own) - used_by_tracked
        self.share = max(0.0, others) / elapsed
        self.load_after = os.getloadavg()

    def _busy(self) -> float:
        times = self._psutil.cpu_times()
        return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))

    @staticmethod
    def _self_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25, window_s: float = 2.0) -> str:
    """Wait (at most `max_wait_s`) until processes other than this one use less than `threshold` of one CPU over a
    `window_s` window: the machine is shared, and a busy neighbour skews a measurement. Says how it went."""
    started = time.monotonic()
    share = 0.0
    while True:
        probe = OtherCpu(lambda: 0.0)
        time.sleep(window_s)
        probe.stop()
        share = probe.share
        waited = time.monotonic() - started
        if share < threshold:
            return f"quiet after {waited:.0f} s ({share:.0%})"
        if waited >= max_wait_s:
            return f"not quiet after {waited:.0f} s ({share:.0%} of a CPU used by others): measured anyway"


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.2f}" for value in load)


# -- data ---------------------------------------------------------------------------------------------------


def sample_lines() -> list[bytes]:
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    if len(lines) <= TRAIN_ROWS:
        raise SystemExit(f"{SAMPLE} has {len(lines)} lines; the benchmark needs more than {TRAIN_ROWS}")
    return lines


def candidate_prompts(test_lines: list[bytes]) -> list[list[dict[str, str]]]:
    """The first user turn of each test conversation, shortest first (decoding dominates, not the prompt)."""
    prompts = []
    for line in test_lines:
        messages = json.loads(line)["messages"]
        first_user = next((m["content"] for m in messages if m["role"] == "user"), None)
        if first_user:
            prompts.append([{"role": "user", "content": first_user}])
    return sorted(prompts, key=lambda conversation: len(conversation[0]["content"]))


def held_out_conversations(test_lines: list[bytes]) -> list[list[dict[str, str]]]:
    """Each test conversation up to its last user turn (the answer to it, and anything after, left out)."""
    conversations = []
    for line in test_lines:
        messages = json.loads(line)["messages"]
        users = [index for index, message in enumerate(messages) if message["role"] == "user"]
        if users:
            conversations.append([{"role": m["role"], "content": m["content"]} for m in messages[: users[-1] + 1]])
    return conversations


def reuse_cached_conversion(models_dir: Path, model: str) -> str:
    """'cached' when <state>/models has the model already (or it is copied from an earlier demo), else 'built'."""
    target = models_dir / model
    if (target / "config.json").exists():
        return "cached"
    for cache in CONVERSION_CACHES:
        source = cache / model
        if (source / "config.json").exists():
            models_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target)
            return f"cached (copied from {source.relative_to(REPO)})"
    return "built in this job"


# -- training -----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: str
    run_id: str
    status: str
    error: str | None = None
    steps: int = 0
    batch: int = 0
    epochs: str = ""
    train_tokens: int = 0
    train_seconds: float = 0.0
    tokens_per_second: float = 0.0
    wall_s: float = 0.0
    peak_rss_mb: float | None = None
    peak_rss_source: str = ""
    worker_cpu_s: float | None = None
    conversion: str = ""
    phases: str = ""
    rss_by_phase: dict[str, float] = field(default_factory=dict)  # sampled VmRSS maximum, MB
    other_cpu: float = 0.0
    load: str = ""
    quiet: str = ""
    model_name: str | None = None
    model_version: str | None = None


def train(engine, data, model: str, smollm2_steps: int, quiet_wait_s: float) -> TrainResult:
    from shared.domain.finetune import LOCAL_PRESETS, parameters_for
    from shared.domain.tags import RUN_TAG
    from shared.engine.base import JobSpec
    from shared.engine.local.jobfiles import JobFiles

    overrides: dict[str, object] = {"max_steps": smollm2_steps} if model == SMOLLM2 else {}
    params = parameters_for(LOCAL_PRESETS.get(model, {}), overrides)
    run_id = f"bench-{SHORT_NAMES.get(model, 'model')}-{uuid.uuid4().hex[:8]}"
    conversion = reuse_cached_conversion(ENGINE_STATE / "models", model)
    result = TrainResult(model=model, run_id=run_id, status="submitted", conversion=conversion)
    spec = JobSpec(run_id=run_id, base_model=model, parameters=params, data=data, tags={RUN_TAG: run_id})

    peak_kb, worker_cpu = 0, 0.0
    pid: int | None = None
    result.quiet = wait_for_quiet(quiet_wait_s) if quiet_wait_s > 0 else "not waited for"
    other = OtherCpu(lambda: 0.0)
    started = time.monotonic()
    engine.submit_job(spec)
    files = JobFiles(engine.job_folder(run_id))
    try:
        while True:
            info = engine.get_job(run_id)
            state = files.read_state()
            if state is not None and state.pid:
                pid = state.pid
            elif pid is None and files.launcher_pid.exists():
                pid = int(files.launcher_pid.read_text())
            peak_kb = max(peak_kb, vm_kb(pid, "VmHWM") or 0)
            progress = files.read_progress()
            phase = (
                "load + base eval"
                if progress is None
                else "steps"
                if progress.step < progress.max_steps or not progress.max_steps
                else "final eval + save"
            )
            rss_mb = (vm_kb(pid, "VmRSS") or 0) / 1024
            result.rss_by_phase[phase] = max(result.rss_by_phase.get(phase, 0.0), rss_mb)
            worker_cpu = cpu_seconds(pid) or worker_cpu
            if info.status.is_terminal:
                break
            if time.monotonic() - started > JOB_TIMEOUT_S:
                raise TimeoutError(f"job {run_id} still {info.status} after {JOB_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
    except BaseException:
        engine.cancel_job(run_id)  # nothing left running behind an interrupted benchmark
        raise
    result.wall_s = time.monotonic() - started
    exact = wait_child(pid, 60.0) if pid else None
    if exact is not None:
        result.peak_rss_mb, result.worker_cpu_s = exact
        result.peak_rss_source = "wait4 ru_maxrss"
    else:
        result.peak_rss_mb, result.worker_cpu_s = peak_kb / 1024 or None, worker_cpu
        result.peak_rss_source = "sampled VmHWM"
    other.stop(tracked_total=result.worker_cpu_s or 0.0)
    result.other_cpu, result.load = other.share, f"{fmt_load(other.load_before)} -> {fmt_load(other.load_after)}"

    result.status = str(info.status)
    result.error = info.error
    metrics, progress = files.read_metrics(), files.read_progress()
    result.batch = params.per_device_train_batch_size * params.gradient_accumulation_steps
    if progress is not None:
        result.steps = progress.step
        result.epochs = f"{progress.epoch:.2f}"
    if metrics is not None:
        result.train_tokens = metrics.train_tokens
        result.train_seconds = metrics.train_seconds
        result.tokens_per_second = metrics.tokens_per_second
    result.phases = job_phases(files.log_path)
    return result


def job_phases(log_path: Path) -> str:
    """Phase durations from job.log's timestamps (1 s resolution)."""
    marks: dict[str, datetime] = {}
    logged_s = None
    patterns = {
        "submitted": "submitted:",
        "started": "started: worker pid",
        "model": "base model: ",
        "base_eval": "evaluating the base model",
        "training": "training",
        "trained": "trained ",
        "saved": "saved the ",
        "completed": "completed",
    }
    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for line in lines:
        stamp, _, message = line.partition(" ")
        try:
            when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            continue
        for key, prefix in patterns.items():
            if key not in marks and (message == prefix if key == "training" else message.startswith(prefix)):
                marks[key] = when
        if match := re.search(r"logged the model to MLflow as \S+ in ([\d.]+) s", message):
            logged_s = float(match.group(1))

    def span(start: str, end: str) -> str | None:
        if start in marks and end in marks:
            return f"{(marks[end] - marks[start]).total_seconds():.0f}"
        return None

    parts = [
        ("worker start + imports", span("submitted", "started")),
        ("base model resolve/convert + load", span("started", "model")),
        ("trainer setup + base eval", span("model", "training")),
        ("steps", span("training", "trained")),
        ("final eval + merge + save", span("trained", "saved")),
        ("loss curve + report + MLflow log", span("saved", "completed")),
    ]
    text = ", ".join(f"{name} {value} s" for name, value in parts if value is not None)
    if logged_s is not None:
        text += f" (MLflow log_model {logged_s:.1f} s)"
    return text


# -- load generation ----------------------------------------------------------------------------------------


@dataclass
class Reply:
    ok: bool
    text: str = ""
    tokens: int | None = None
    error: str = ""


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode("utf-8")
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
            try:
                self.connection.request("POST", path, body=data, headers=all_headers)
                response = self.connection.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()  # a keep-alive connection the server closed: once more on a new one
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            try:
                return response.status, json.loads(raw)
            except ValueError:
                return response.status, raw.decode("utf-8", "replace")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


Send = Callable[[Client, int], Reply]


@dataclass
class LoadRun:
    latencies: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outputs: dict[int, str] = field(default_factory=dict)
    wall_s: float = 0.0


def run_load(port: int, send: Send, prompts: int, clients: int, per_client: int) -> LoadRun:
    """`clients` threads, each with its own connection, sending `per_client` requests back to back.
    Client c's request j uses prompt (c + j) % prompts."""
    run = LoadRun()
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def work(index: int) -> None:
        client = Client(port)
        barrier.wait()
        try:
            for j in range(per_client):
                prompt = (index + j) % prompts
                started = time.perf_counter()
                try:
                    reply = send(client, prompt)
                except Exception as exc:  # a failed request is counted, not fatal
                    client.close()
                    reply = Reply(ok=False, error=f"{type(exc).__name__}: {exc}")
                elapsed = time.perf_counter() - started
                with lock:
                    if reply.ok:
                        run.latencies.append(elapsed)
                        if reply.tokens is not None:
                            run.tokens.append(reply.tokens)
                        run.outputs.setdefault(prompt, reply.text)
                    else:
                        run.errors.append(reply.error)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(i,), name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    run.wall_s = time.perf_counter() - started
    return run


def warm_up(port: int, send: Send, prompts: int, clients: int) -> list[str]:
    """One request alone, then one per client at once: loads lazy code paths and pools. Not measured."""
    problems = []
    reply = send(Client(port), 0)
    if not reply.ok:
        problems.append(reply.error)
    problems += run_load(port, send, prompts, clients, 1).errors
    return problems


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class ServeResult:
    model: str
    server: str
    backend: str = ""
    clients: int = 0
    per_client: int = 0
    requests: int = 0
    errors: int = 0
    error_sample: str = ""
    p50: float = float("nan")
    p95: float = float("nan")
    req_per_s: float = 0.0
    tok_per_s: float = 0.0
    tokens_per_request: float = 0.0
    token_counts: list[int] = field(default_factory=list)  # the distinct counts the answers reported
    tokens_note: str = ""
    prompt_tokens: float = 0.0
    cpu_s_per_request: float | None = None
    rss: dict[str, float] = field(default_factory=dict)  # process -> peak RSS MB (VmHWM), read after the batch
    ready_s: float = 0.0
    other_cpu: float = 0.0
    load: str = ""
    quiet: str = ""
    threads: str = ""
    outputs: dict[int, str] = field(default_factory=dict)
    failure: str | None = None

    @property
    def peak_rss_mb(self) -> float:
        return sum(self.rss.values())

    @property
    def measured(self) -> bool:
        return bool(self.requests) and not self.failure


@dataclass(frozen=True)
class LoadPlan:
    clients: int
    per_client: int
    quiet_wait_s: float


def measure(result: ServeResult, port: int, send: Send, prompts: int, plan: LoadPlan, pids: list[int]) -> LoadRun:
    clients, per_client = plan.clients, plan.per_client
    result.clients, result.per_client = clients, per_client
    problems = warm_up(port, send, prompts, clients)
    if problems:
        raise RuntimeError(f"warm-up failed: {problems[0]}")
    result.quiet = wait_for_quiet(plan.quiet_wait_s) if plan.quiet_wait_s > 0 else "not waited for"
    cpu_before = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    other = OtherCpu(lambda: sum(cpu_seconds(pid) or 0.0 for pid in pids))
    run = run_load(port, send, prompts, clients, per_client)
    other.stop()
    cpu_after = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    result.requests, result.errors = len(run.latencies), len(run.errors)
    result.error_sample = run.errors[0][:200] if run.errors else ""
    result.p50, result.p95 = percentile(run.latencies, 0.50), percentile(run.latencies, 0.95)
    result.req_per_s = len(run.latencies) / run.wall_s
    result.tok_per_s = sum(run.tokens) / run.wall_s
    result.tokens_per_request = sum(run.tokens) / len(run.tokens) if run.tokens else 0.0
    result.token_counts = sorted(set(run.tokens))
    result.cpu_s_per_request = (cpu_after - cpu_before) / max(1, len(run.latencies))
    result.other_cpu, result.load = other.share, f"{fmt_load(other.load_before)} -> {fmt_load(other.load_after)}"
    result.outputs = run.outputs
    return run


def measure_each(
    template: ServeResult,
    port: int,
    send: Send,
    prompts: int,
    plans: list[LoadPlan],
    pids: list[int],
    rss: Callable[[], dict[str, float]],
) -> list[ServeResult]:
    """One result per plan (client count), on the same running server; a failed plan does not stop the next."""
    results = []
    for plan in plans:
        result = dataclasses.replace(template, rss={}, outputs={}, token_counts=[])
        try:
            measure(result, port, send, prompts, plan, pids)
            result.rss = rss()
        except Exception as exc:
            result.failure = f"{type(exc).__name__}: {exc}"
        results.append(result)
    return results


@dataclass
class HeldOut:
    """A server's greedy answers to the held-out conversations (None where it refused one)."""

    answers: list[str | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Served:
    """One server's results at each client count, the prompts they used and its held-out answers."""

    results: list[ServeResult]
    chosen: list[list[dict[str, str]]] = field(default_factory=list)
    held_out: HeldOut | None = None
    threads: int | None = None
    failure: str | None = None

    def fail(self, template: ServeResult, failure: str) -> None:
        """Something failed outside a measured batch: noted, and shown as the only row if none was measured."""
        self.failure = failure
        if not any(result.measured for result in self.results):
            template.failure = failure
            self.results = [template]


def score_sender(chosen: list, key: str, counts: list[int]) -> Send:
    """POST /score (Azure ML contract, Bearer key) with 32 greedy new tokens, no early end; `counts`: each prompt's
    completion tokens, as the deployment reported them (/score does not)."""
    parameters = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    headers = {"Authorization": f"Bearer {key}"}

    def send(client: Client, prompt: int) -> Reply:
        body = {"input_data": {"input_string": chosen[prompt], "parameters": parameters}, "params": {}}
        status, answer = client.post("/score", body, headers)
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("output"), str):
            return Reply(ok=False, error=f"HTTP {status}: {str(answer)[:200]}")
        return Reply(ok=True, text=answer["output"], tokens=counts[prompt])

    return send


def held_out_answers(port: int, key: str, conversations: list, clients: int) -> HeldOut:
    """Each conversation in a /score request of its own, `clients` at a time, HELD_OUT_NEW_TOKENS greedy tokens (an
    answer may end earlier)."""
    parameters = {"max_new_tokens": HELD_OUT_NEW_TOKENS, "do_sample": False}
    headers = {"Authorization": f"Bearer {key}"}

    def ask(conversation: list[dict[str, str]]) -> tuple[str | None, str]:
        client = Client(port)
        try:
            body = {"input_data": {"input_string": conversation, "parameters": parameters}, "params": {}}
            status, answer = client.post("/score", body, headers)
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("output"), str):
            return answer["output"], ""
        return None, f"HTTP {status}: {str(answer)[:200]}"

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, clients)) as pool:
        replies = list(pool.map(ask, conversations))
    held = HeldOut(seconds=time.perf_counter() - started)
    held.answers = [text for text, _ in replies]
    held.errors = [error for _, error in replies if error]
    return held


def verified_counts(deployment_port: int, chosen: list) -> tuple[list[int], float, str]:
    """(completion tokens per prompt, mean prompt tokens, a note), from the deployment's own /generate with the
    parameters the load sends."""
    parameters = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    verified = [generate_direct(deployment_port, c, parameters)["details"][0] for c in chosen]
    counts = [int(d["completion_tokens"]) for d in verified]
    note = (
        f"min_new_tokens = max_new_tokens = {NEW_TOKENS}; /generate with the same parameters returned "
        f"{sorted(set(counts))} completion tokens for the {len(chosen)} prompts"
    )
    return counts, sum(int(d["prompt_tokens"]) for d in verified) / len(verified), note


def health(port: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/health")
        body = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return body if isinstance(body, dict) else {}


# -- our endpoint -------------------------------------------------------------------------------------------


def endpoint_config(name: str) -> dict[str, Any]:
    return json.loads((ENGINE_STATE / "endpoints" / name / "endpoint.json").read_text(encoding="utf-8"))


def generate_direct(port: int, conversation: list[dict[str, str]], parameters: dict[str, Any]) -> dict[str, Any]:
    """POST /generate on a deployment process itself (bypassing the router): it reports token counts."""
    status, body = Client(port).post("/generate", {"conversations": [conversation], "parameters": parameters})
    if status != 200:
        raise RuntimeError(f"/generate answered {status}: {body}")
    return body


def choose_prompts(port: int, candidates: list[list[dict[str, str]]], wanted: int) -> tuple[list[int], str]:
    """Indices of candidates whose greedy answer runs to NEW_TOKENS tokens on its own (so that both servers do the
    same work even where one cannot be made to ignore the end of the answer); the longest answers otherwise."""
    lengths: list[tuple[int, int]] = []
    for index, conversation in enumerate(candidates):
        body = generate_direct(port, conversation, {"max_new_tokens": NEW_TOKENS, "do_sample": False})
        tokens = int(body["details"][0]["completion_tokens"])
        lengths.append((index, tokens))
        if sum(1 for _, n in lengths if n >= NEW_TOKENS) >= wanted:
            break
    full = [index for index, n in lengths if n >= NEW_TOKENS][:wanted]
    if len(full) >= wanted:
        return full, f"{wanted} of the first {len(lengths)} candidates (shortest first) answer {NEW_TOKENS}+ tokens"
    rest = sorted((item for item in lengths if item[0] not in full), key=lambda item: -item[1])
    chosen = full + [index for index, _ in rest[: wanted - len(full)]]
    return (
        chosen,
        f"only {len(full)} of {len(lengths)} candidates answer {NEW_TOKENS}+ tokens greedily; the rest stop early",
    )


class EndpointsWithThreads:
    """The engine's endpoint operations, with deployments given `threads` torch threads: LocalEndpoints takes
    `serving_threads`, which LocalEngine leaves at its default (deployment_server.default_threads)."""

    def __init__(self, state_dir: Path, threads: int) -> None:
        from shared.engine.local.endpoints import LocalEndpoints
        from shared.engine.local.registry import LocalRegistry

        self._endpoints = LocalEndpoints(state_dir, serving_threads=threads)
        self._registry = LocalRegistry(state_dir)

    def create_or_update_endpoint(self, name: str, tags: dict[str, str]):
        return self._endpoints.create_or_update_endpoint(name, tags)

    def create_deployment(self, endpoint_name: str, deployment_name: str, model):
        weights, tokenizer = self._registry.model_folders(model)
        return self._endpoints.create_deployment(endpoint_name, deployment_name, model, weights, tokenizer)

    def set_traffic(self, endpoint_name: str, traffic: dict[str, int]):
        return self._endpoints.set_traffic(endpoint_name, traffic)

    def get_keys(self, endpoint_name: str):
        return self._endpoints.get_keys(endpoint_name)

    def delete_endpoint(self, name: str) -> None:
        self._endpoints.delete_endpoint(name)


def serve_ours(
    engine,
    model_ref,
    model: str,
    candidates,
    plans: list[LoadPlan],
    server: str = "ours",
    prompts: list | None = None,
    held_out: list | None = None,
) -> Served:
    """Deploy on a local endpoint and measure it at each plan; answer `held_out` when given. Without `prompts`,
    they are chosen on this deployment."""
    from shared.domain.tags import MANAGED_TAG

    template = ServeResult(model=model, server=server)
    served = Served(results=[], chosen=list(prompts or []))
    name = f"bench-{SHORT_NAMES.get(model, 'model')}"
    try:
        started = time.monotonic()
        engine.create_or_update_endpoint(name, {MANAGED_TAG: "true"})
        engine.create_deployment(name, DEPLOYMENT, model_ref)
        engine.set_traffic(name, {DEPLOYMENT: 100})
        template.ready_s = time.monotonic() - started
        config = endpoint_config(name)
        spec = config["deployments"][DEPLOYMENT]
        router_pid, deployment_pid, deployment_port = config["router_pid"], spec["pid"], spec["port"]
        served.threads = deployment_threads(deployment_pid)
        template.backend = str(health(deployment_port).get("backend", "?"))
        template.threads = f"deployment: {served.threads} thread(s), {template.backend}, dynamic batching"
        if template.backend != "ctranslate2":
            template.threads += f" ({fallback_reason(ENGINE_STATE / 'endpoints' / name / 'deployments' / DEPLOYMENT)})"
        if served.chosen:
            how = "the same as for the first deployment"
        else:
            wanted = max(PROMPTS, *(plan.clients for plan in plans))
            indices, how = choose_prompts(deployment_port, candidates, wanted)
            served.chosen = [candidates[i] for i in indices]
        counts, template.prompt_tokens, note = verified_counts(deployment_port, served.chosen)
        template.tokens_note = f"{note}; prompts: {how}"
        key = engine.get_keys(name).primary

        def rss() -> dict[str, float]:
            pairs = (("router", router_pid), ("deployment", deployment_pid))
            return {label: (vm_kb(pid, "VmHWM") or 0) / 1024 for label, pid in pairs}

        send = score_sender(served.chosen, key, counts)
        pids = [router_pid, deployment_pid]
        served.results = measure_each(template, config["port"], send, len(served.chosen), plans, pids, rss)
        if held_out:
            served.held_out = held_out_answers(config["port"], key, held_out, max(p.clients for p in plans))
    except Exception as exc:
        served.fail(template, f"{type(exc).__name__}: {exc}")
    finally:
        engine.delete_endpoint(name)
    return served


def fallback_reason(deployment_folder: Path) -> str:
    """Why the deployment serves with transformers, from its log (it says so when the model does not convert)."""
    try:
        lines = (deployment_folder / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    reason = next((line for line in reversed(lines) if " with transformers: " in line), "")
    return "not converted: " + reason.split(" with transformers: ", 1)[1][-300:] if reason else "no reason logged"


def deployment_threads(pid: int) -> int:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return int(args[args.index(b"--threads") + 1].decode())
    except (OSError, ValueError, IndexError):
        from shared.engine.local.serving.deployment_server import default_threads

        return default_threads()


# -- the server before: router and deployment of --baseline-ref -----------------------------------------------


ROUTER_MODULE = "shared.engine.local.serving.router"
DEPLOYMENT_MODULE = "shared.engine.local.serving.deployment_server"


def git(*args: str | Path) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *map(str, args)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(map(str, args))}: {done.stderr.strip()}")
    return done.stdout.strip()


def baseline_tree(ref: str) -> Path:
    """A detached git worktree of `ref` in .state/bench/baseline-<ref>: made once, reused, moved to `ref`'s commit if
    it holds another."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = STATE / ("baseline-" + re.sub(r"[^A-Za-z0-9._-]", "_", ref))
    if (path / ".git").exists():
        if git("-C", path, "rev-parse", "HEAD") != commit:
            git("-C", path, "checkout", "--quiet", "--detach", commit)
        return path
    git("worktree", "prune")
    git("worktree", "add", "--detach", path, commit)
    return path


@dataclass
class BaselineProcesses:
    tree: Path
    folder: Path  # the endpoint folder its router reads
    key: str = ""
    port: int = 0
    router_pid: int | None = None
    deployment_pid: int | None = None
    deployment_port: int = 0


def baseline_env(tree: Path) -> dict[str, str]:
    """The old code first on the path (cwd and PYTHONPATH are the worktree), the same settings as our deployments."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(
        PYTHONPATH=str(tree),
        PYTHONUNBUFFERED="1",
        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def start_baseline(processes: BaselineProcesses, weights: Path, tokenizer: Path, threads: int) -> None:
    """Its deployment server on `weights`, then its router on an endpoint.json naming it (100% traffic); PIDs are
    recorded in `processes` as they start, so that a failure stops what did start."""
    from shared.engine.local.processes import free_port, start_process, wait_http_ok
    from shared.engine.local.serving.router import DEFAULT_LIMITS

    folder, tree, env = processes.folder, processes.tree, baseline_env(processes.tree)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    processes.key = secrets.token_urlsafe(32)
    keys = {"primary": processes.key, "secondary": secrets.token_urlsafe(32)}
    (folder / "keys.json").write_text(json.dumps(keys), encoding="utf-8")
    processes.deployment_port = free_port()
    command = [
        sys.executable, "-m", DEPLOYMENT_MODULE, "--model-dir", str(weights), "--tokenizer-dir", str(tokenizer),
        "--port", str(processes.deployment_port), "--name", DEPLOYMENT, "--threads", str(threads),
    ]  # fmt: skip
    log = folder / "deployment.log"
    processes.deployment_pid = start_process(command, log_path=log, cwd=tree, env=env)
    url = f"http://127.0.0.1:{processes.deployment_port}/health"
    answer = json.loads(wait_http_ok(url, timeout_s=SERVER_START_TIMEOUT_S, pid=processes.deployment_pid, log_path=log))
    if answer.get("name") != DEPLOYMENT or "backend" in answer:
        raise RuntimeError(f"the deployment on port {processes.deployment_port} is not the old server: {answer}")
    processes.port = free_port()
    deployment = {"name": DEPLOYMENT, "port": processes.deployment_port, "pid": processes.deployment_pid}
    config = {
        "name": folder.name,
        "port": processes.port,
        "deployments": {DEPLOYMENT: {**deployment, "state": "Succeeded", "model_dir": str(weights)}},
        "traffic": {DEPLOYMENT: 100},
        "limits": dict(DEFAULT_LIMITS),
    }
    (folder / "endpoint.json").write_text(json.dumps(config), encoding="utf-8")
    log = folder / "router.log"
    command = [sys.executable, "-m", ROUTER_MODULE, "--endpoint-dir", str(folder)]
    processes.router_pid = start_process(command, log_path=log, cwd=tree, env=env)
    url = f"http://127.0.0.1:{processes.port}/"
    answer = json.loads(wait_http_ok(url, timeout_s=SERVER_START_TIMEOUT_S, pid=processes.router_pid, log_path=log))
    if answer.get("pid") != processes.router_pid:
        raise RuntimeError(f"another process answers on port {processes.port}: {answer}")


def stop_baseline(processes: BaselineProcesses) -> None:
    from shared.engine.local.processes import stop_process

    stop_process(processes.router_pid, marker=ROUTER_MODULE, timeout_s=15.0)
    stop_process(processes.deployment_pid, marker=DEPLOYMENT_MODULE, timeout_s=15.0)


def serve_baseline(
    tree: Path, ref: str, folders: tuple[Path, Path], model: str, chosen: list, plans: list[LoadPlan], threads: int,
    held_out: list | None,
) -> Served:  # fmt: skip
    """The same registered model on the router and deployment server of `ref`, measured exactly like ours."""
    template = ServeResult(model=model, server="before", backend=f"transformers ({ref})")
    template.threads = f"deployment: {threads} thread(s), transformers, one generate at a time (a lock)"
    served = Served(results=[template], chosen=chosen, threads=threads)
    if not chosen:
        served.fail(template, "no prompts (our endpoint failed before choosing them)")
        return served
    processes = BaselineProcesses(tree=tree, folder=ENGINE_STATE / "baseline" / SHORT_NAMES.get(model, "model"))
    try:
        started = time.monotonic()
        start_baseline(processes, *folders, threads)
        template.ready_s = time.monotonic() - started
        counts, template.prompt_tokens, note = verified_counts(processes.deployment_port, chosen)
        template.tokens_note = f"{note}; prompts: the same as ours"
        send = score_sender(chosen, processes.key, counts)
        pids = [p for p in (processes.router_pid, processes.deployment_pid) if p]

        def rss() -> dict[str, float]:
            pairs = (("router", processes.router_pid), ("deployment", processes.deployment_pid))
            return {label: (vm_kb(pid, "VmHWM") or 0) / 1024 for label, pid in pairs}

        served.results = measure_each(template, processes.port, send, len(chosen), plans, pids, rss)
        if held_out:
            served.held_out = held_out_answers(processes.port, processes.key, held_out, max(p.clients for p in plans))
    except Exception as exc:
        served.fail(template, f"{type(exc).__name__}: {exc}")
    finally:
        stop_baseline(processes)
    return served


# -- mlflow models serve ------------------------------------------------------------------------------------


def mlflow_sender(chosen: list) -> Send:
    body_params = {"max_tokens": NEW_TOKENS, "top_k": 1}  # top_k 1: greedy (min_new_tokens cannot be passed)

    def send(client: Client, prompt: int) -> Reply:
        status, answer = client.post("/invocations", {"messages": chosen[prompt], **body_params})
        try:
            first = answer[0] if isinstance(answer, list) else answer
            text = first["choices"][0]["message"]["content"]
            tokens = int(first["usage"]["completion_tokens"])
        except (KeyError, IndexError, TypeError, ValueError):
            return Reply(ok=False, error=f"HTTP {status}: {str(answer)[:200]}")
        return Reply(ok=status == 200, text=text, tokens=tokens, error=f"HTTP {status}")

    return send


def serve_mlflow(model_ref, model: str, chosen, plans: list[LoadPlan]) -> Served:
    from shared.engine.local.mlflow_store import tracking_uri
    from shared.engine.local.processes import free_port

    template = ServeResult(model=model, server="mlflow", backend="transformers (mlflow pyfunc)")
    template.threads = "uvicorn, 1 worker; each request in a thread (asyncio.to_thread): generations run concurrently"
    served = Served(results=[template], chosen=chosen)
    if not chosen:
        served.fail(template, "no prompts (our endpoint failed before choosing them)")
        return served
    port = free_port()
    scratch = ENGINE_STATE / "mlflow-serve" / SHORT_NAMES.get(model, "model")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(ENGINE_STATE),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "TMPDIR": str(scratch),  # where it copies the model's artifacts; removed afterwards
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),  # what our deployments get (_child_env)
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"), "models", "serve",
        "-m", f"models:/{model_ref.name}/{model_ref.version}",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-t", str(int(REQUEST_TIMEOUT_S)),
    ]  # fmt: skip
    log_path = ENGINE_STATE / f"mlflow-serve-{SHORT_NAMES.get(model, 'model')}.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=scratch,
            )  # fmt: skip
        wait_ping(port, process, log_path)
        template.ready_s = time.monotonic() - started
        pids = process_tree(process.pid)
        template.threads += f"; torch {mlflow_torch_threads()} thread(s) per generation"

        def rss() -> dict[str, float]:
            names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in process_tree(process.pid)}
            return {f"{names[pid]} ({pid})": (vm_kb(pid, "VmHWM") or 0) / 1024 for pid in names}

        served.results = measure_each(template, port, mlflow_sender(chosen), len(chosen), plans, pids, rss)
        for result in served.results:
            result.tokens_note = (
                f"max_tokens {NEW_TOKENS}, top_k 1 (greedy); usage.completion_tokens per request: {result.token_counts}"
            )
    except Exception as exc:
        served.fail(template, f"{type(exc).__name__}: {exc}")
    finally:
        if process is not None:
            stop_group(process)
        shutil.rmtree(scratch, ignore_errors=True)
    return served


def mlflow_torch_threads() -> int:
    """What torch picks by default in a process that does not set it (mlflow does not)."""
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True, text=True, check=False,
        env={k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    )  # fmt: skip
    return int(out.stdout.strip() or 0)


def wait_ping(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"mlflow models serve exited with {process.returncode}: {' | '.join(tail)}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                connection.close()
                return
            connection.close()
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow models serve did not answer /ping within {SERVER_START_TIMEOUT_S:.0f} s")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (the mlflow CLI and its uvicorn child), SIGKILL after 15 s."""
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    process.poll()


# -- identity on the held-out conversations -------------------------------------------------------------------


@dataclass
class Identity:
    """Ours against the server before on the held-out conversations: identical answers, and where others part."""

    model: str
    total: int = 0
    compared: int = 0
    identical: int = 0
    differences: list[Any] = field(default_factory=list)  # bench_generation_engines.Difference, prompt = index
    missing: list[str] = field(default_factory=list)
    ours_s: float = 0.0
    before_s: float = 0.0
    failure: str | None = None

    @property
    def share(self) -> float | None:
        return self.identical / self.compared if self.compared else None

    def near_ties(self, near_tie: float) -> int:
        return sum(1 for d in self.differences if d.margin is not None and d.margin <= near_tie)


def compare_held_out(
    model: str, folders: tuple[Path, Path], conversations: list, ours: HeldOut, before: HeldOut
) -> Identity:
    """Answers compared as text; where they differ, both are tokenized again and transformers' margin is taken at
    the first differing token, after the prompt and the common prefix (the server before is the reference)."""
    from bench_generation_engines import Difference, MarginModel, chat_ids, difference, load_tokenizer

    identity = Identity(model=model, total=len(conversations), ours_s=ours.seconds, before_s=before.seconds)
    identity.missing = [f"ours: {e}" for e in ours.errors] + [f"before: {e}" for e in before.errors]
    weights, tokenizer_dir = folders
    tokenizer = load_tokenizer(tokenizer_dir)
    margins: MarginModel | None = None
    for index, (conversation, a, b) in enumerate(zip(conversations, ours.answers, before.answers, strict=True)):
        if a is None or b is None:
            continue
        identity.compared += 1
        if a == b:
            identity.identical += 1
            continue
        margins = margins or MarginModel(weights, tokenizer)
        ours_ids, before_ids = (list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in (a, b))
        prompt_ids = chat_ids(tokenizer, conversation)
        found = difference(margins, index, prompt_ids, before_ids, ours_ids, lambda position: [])
        identity.differences.append(found or Difference(index, -1, None, "the texts differ, their tokens do not"))
    return identity


def render_identity(identities: list[Identity], near_tie: float, ref: str, clients: int) -> list[str]:
    lines = [
        "",
        f"## Greedy answers on the held-out conversations: ours against the server before ({ref})",
        "",
        f"Each held-out conversation up to its last user turn, one `/score` request each ({clients} at a time), "
        f'`{{"max_new_tokens": {HELD_OUT_NEW_TOKENS}, "do_sample": false}}`: each answer may end on its own.',
        "",
        "| model | conversations | compared | identical | differ | of them near-ties | ours (s) | before (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in identities:
        if i.failure:
            lines.append(f"| {i.model} | failed: {i.failure[:200]} |" + " |" * 6)
            continue
        share = f" ({i.share:.0%})" if i.share is not None else ""
        lines.append(
            f"| {i.model} | {i.total} | {i.compared} | {i.identical}{share} | {len(i.differences)} "
            f"| {i.near_ties(near_tie)} | {i.ours_s:.1f} | {i.before_s:.1f} |"
        )
    lines += [
        "",
        f"- identical: the same text. A near-tie: transformers' top-1 minus top-2 logit at most {near_tie} at the "
        "first differing token, computed on the prompt and the common prefix (both answers tokenized again from "
        "their text; the server before's tokens are the reference). ours (s), before (s): the wall time of all the "
        "answers on each server.",
    ]
    from bench_generation_engines import describe_differences

    for i in identities:
        if i.differences:
            lines.append(f"- {i.model}, differences: {describe_differences(i.differences)}")
        if i.missing:
            lines.append(f"- {i.model}, not answered ({len(i.missing)}): {'; '.join(i.missing[:3])}")
    return lines


# -- targets --------------------------------------------------------------------------------------------------


@dataclass
class Target:
    model: str
    name: str
    measured: str
    passed: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return "not measured" if self.passed is None else "PASS" if self.passed else "FAIL"


def find(served: list[ServeResult], model: str, server: str, clients: int) -> ServeResult | None:
    return next(
        (s for s in served if s.model == model and s.server == server and s.clients == clients and s.measured), None
    )


def evaluate_targets(
    model: str, served: list[ServeResult], identity: Identity | None, clients: int, near_tie: float
) -> list[Target]:
    ours, mlflow = find(served, model, "ours", clients), find(served, model, "mlflow", clients)
    ours_1, before_1 = find(served, model, "ours", 1), find(served, model, "before", 1)
    targets = []
    if ours and mlflow:
        rps, p50 = ours.req_per_s / mlflow.req_per_s, ours.p50 / mlflow.p50
        measured = f"{rps:.2f}x ({ours.req_per_s:.2f} vs {mlflow.req_per_s:.2f})"
        targets.append(
            Target(model, f"{clients} clients: requests/s >= {TARGET_RPS_X:g}x mlflow's", measured, rps >= TARGET_RPS_X)
        )
        measured = f"{p50:.2f}x ({ours.p50:.2f} s vs {mlflow.p50:.2f} s)"
        targets.append(
            Target(model, f"{clients} clients: p50 <= {TARGET_P50_X:g}x mlflow's", measured, p50 <= TARGET_P50_X)
        )
    else:
        targets.append(Target(model, f"{clients} clients: requests/s and p50 against mlflow", "", None))
    name = "1 client: p50 <= the server before's"
    if ours_1 and before_1:
        measured = f"{ours_1.p50:.3f} s vs {before_1.p50:.3f} s"
        targets.append(Target(model, name, measured, ours_1.p50 <= before_1.p50))
    else:
        targets.append(Target(model, name, "", None))
    rss_bytes = ours.rss["deployment"] * MIB if ours and ours.rss.get("deployment") else None
    name = f"deployment peak RSS <= {TARGET_RSS_BYTES / 1e9:g} GB (VmHWM, {clients} clients)"
    measured = f"{rss_bytes / 1e9:.2f} GB" if rss_bytes else ""
    targets.append(Target(model, name, measured, rss_bytes <= TARGET_RSS_BYTES if rss_bytes else None))
    share = identity.share if identity else None
    name = f"held-out answers identical to the server before's >= {TARGET_IDENTICAL:.0%}"
    if identity is None or share is None:
        targets.append(Target(model, name, "", None))
        return targets
    targets.append(Target(model, name, f"{identity.identical} of {identity.compared}", share >= TARGET_IDENTICAL))
    ties = identity.near_ties(near_tie)
    name = f"the others differ only after a near-tie (margin <= {near_tie})"
    targets.append(Target(model, name, f"{ties} of {len(identity.differences)}", ties == len(identity.differences)))
    return targets


def render_targets(targets: list[Target]) -> list[str]:
    lines = [
        "",
        "## Targets",
        "",
        f"The issue's targets are for {TARGET_MODEL} at {TARGET_CLIENTS} clients; other models' rows: for reference.",
        "",
        "| model | target | measured | result |",
        "|---|---|---|---|",
    ]
    for t in targets:
        verdict = t.verdict if t.model == TARGET_MODEL else f"({t.verdict})"
        lines.append(f"| {t.model} | {t.name} | {t.measured} | {verdict} |")
    return lines


# -- report -------------------------------------------------------------------------------------------------


def ratio(ours: float | None, theirs: float | None, digits: int = 2) -> str:
    if ours is None or theirs is None or not theirs or ours != ours or theirs != theirs:
        return "n/a"
    return f"{ours / theirs:.{digits}f}x"


@dataclass
class Outcome:
    """Everything the run measured, for the report."""

    trained: list[TrainResult] = field(default_factory=list)
    served: list[ServeResult] = field(default_factory=list)
    identities: list[Identity] = field(default_factory=list)
    engines: Any = None  # bench_generation_engines.EnginesReport
    engines_model: str = ""
    targets: list[Target] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # outside any measured row (baseline tree, held-out answers)


def render(args, outcome: Outcome, run_load_avg: tuple[str, str]) -> str:
    import torch
    import transformers

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Local engine benchmark ({now})",
        "",
        f"- Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}. Shared machine: load average "
        f"(1/5/15 min) {run_load_avg[0]} at the start, {run_load_avg[1]} at the end.",
        f"- Data: the first {TRAIN_ROWS} lines of `samples/ultrachat_sample.jsonl` train, the remaining "
        f"{len(sample_lines()) - TRAIN_ROWS} test (both held in Azurite, copied into the job by the engine).",
        *render_training(args, outcome.trained),
        *render_serving(args, outcome.served),
    ]
    if outcome.identities:
        lines += render_identity(outcome.identities, args.near_tie, args.baseline_ref, max(args.client_counts))
    if outcome.engines is not None:
        from bench_generation_engines import render_engines

        lines += ["", f"## Generation engines ({outcome.engines_model}, no HTTP)", "", *render_engines(outcome.engines)]
    lines += render_targets(outcome.targets)
    if outcome.failures:
        lines += ["", "## Failures", "", *(f"- {failure}" for failure in outcome.failures)]
    lines.append("")
    return "\n".join(lines)


def render_training(args, trained: list[TrainResult]) -> list[str]:
    lines = [
        "",
        "## Training",
        "",
        "| model | steps x batch (epochs) | train tokens | step time (s) | tokens/s | job wall time (s) "
        "| worker peak RSS (MB) | base model conversion | other CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in trained:
        if t.status != "completed":
            lines.append(f"| {t.model} | {t.status}: {t.error} | | | | {t.wall_s:.0f} | | {t.conversion} | |")
            continue
        lines.append(
            f"| {t.model} | {t.steps} x {t.batch} ({t.epochs}) | {t.train_tokens:,} | {t.train_seconds:.1f} "
            f"| {t.tokens_per_second:,.0f} | {t.wall_s:.1f} | {t.peak_rss_mb:,.0f} | {t.conversion} "
            f"| {t.other_cpu:.0%} |"
        )
    lines += [
        "",
        "- tokens/s = metrics.json `tokens_per_second` = `train_tokens` / `train_seconds`: the non-padding tokens of "
        "the training batches (TRL's `num_tokens`, prompt and answer, truncated at max_seq_length 256) over the "
        "time of the optimizer steps only (evaluations in between excluded). The job wall time runs from "
        "`submit_job` to the terminal status and includes worker start-up, base-model load (and conversion when "
        "not cached), base and final evaluation on the 40 test rows, merging, saving and logging the model to MLflow.",
        "- Presets: `parameters_for(LOCAL_PRESETS[model])`; tiny: full fine-tuning, "
        f"{_preset(TINY)}; SmolLM2: LoRA, {_preset(SMOLLM2)}, bounded with max_steps={args.smollm2_steps} "
        f"({args.smollm2_steps} steps x batch 8 = {args.smollm2_steps * 8} conversations).",
        "- Worker peak RSS: the worker is a child of this process; its `ru_maxrss` from wait4 (VmHWM sampled every "
        "0.2 s as a fallback). Other CPU: CPU used by processes other than this one and the worker, in shares of "
        "one CPU, while the job ran.",
    ]
    for t in trained:
        lines.append(
            f"- {t.model} ({t.run_id}): {t.phases}; before it: {t.quiet}; load average {t.load}; "
            f"peak RSS from {t.peak_rss_source}; largest RSS seen (VmRSS every 0.2 s) by phase: "
            + ", ".join(f"{phase} {mb:,.0f} MB" for phase, mb in t.rss_by_phase.items())
            + (f"; worker CPU {t.worker_cpu_s:.0f} s" if t.worker_cpu_s else "")
        )
    return lines


def server_label(server: str, ref: str) -> str:
    labels = {"ours": "ours (router + deployment)", "mlflow": "mlflow models serve"}
    return labels.get(server, f"before: {ref} (router + deployment)" if server == "before" else server)


def serving_row(s: ServeResult, ref: str) -> str:
    label = server_label(s.server, ref)
    if s.failure and not s.requests:
        return f"| {s.model} | {label} | {s.backend} | {s.clients or ''} | failed: {s.failure[:150]} |" + " |" * 9
    deployment = f"{s.rss['deployment']:,.0f}" if "deployment" in s.rss else ""
    return (
        f"| {s.model} | {label} | {s.backend} | {s.clients} | {s.requests} ({s.errors}) | {s.tokens_per_request:.1f} "
        f"| {s.p50:.3f} | {s.p95:.3f} | {s.req_per_s:.2f} | {s.tok_per_s:.1f} | {s.cpu_s_per_request:.3f} "
        f"| {s.peak_rss_mb:,.0f} | {deployment} | {s.ready_s:.1f} | {s.other_cpu:.0%} |"
    )


def ratio_row(model: str, label: str, clients: int, ours: ServeResult, theirs: ServeResult) -> str:
    return (
        f"| {model} | **{label}** | | {clients} | | {ratio(ours.tokens_per_request, theirs.tokens_per_request)} "
        f"| {ratio(ours.p50, theirs.p50)} | {ratio(ours.p95, theirs.p95)} "
        f"| {ratio(ours.req_per_s, theirs.req_per_s)} | {ratio(ours.tok_per_s, theirs.tok_per_s)} "
        f"| {ratio(ours.cpu_s_per_request, theirs.cpu_s_per_request)} "
        f"| {ratio(ours.peak_rss_mb, theirs.peak_rss_mb)} "
        f"| {ratio(ours.rss.get('deployment'), theirs.rss.get('deployment'))} "
        f"| {ratio(ours.ready_s, theirs.ready_s)} | |"
    )


def ratio_rows(model: str, served: list[ServeResult], clients: list[int]) -> list[str]:
    """ours / mlflow, ours / before, and each other variant of ours / mlflow, at each client count."""
    servers = list(dict.fromkeys(s.server for s in served if s.model == model))
    rows = []
    for count in clients:
        mlflow, before = find(served, model, "mlflow", count), find(served, model, "before", count)
        for server in servers:
            ours = find(served, model, server, count)
            if ours is None or server in ("mlflow", "before"):
                continue
            if mlflow:
                rows.append(ratio_row(model, f"{server} / mlflow", count, ours, mlflow))
            if before and server == "ours":
                rows.append(ratio_row(model, "ours / before", count, ours, before))
    return rows


def render_serving(args, served: list[ServeResult]) -> list[str]:
    ref = args.baseline_ref
    lines = [
        "",
        f"## Serving: our local endpoint vs the server before ({ref or 'skipped'}) vs `mlflow models serve`",
        "",
        f"{', '.join(map(str, args.client_counts))} concurrent clients (threads, one keep-alive HTTP/1.1 connection "
        f"each), each sending its requests back to back; every request asks for {NEW_TOKENS} new tokens, greedy, on "
        "the same prompts. Warm-up requests (one alone, then one per client) are excluded. The servers are measured "
        "one at a time: each is stopped before the next starts.",
        "",
        "| model | server | backend | clients | requests (errors) | new tokens/request | p50 (s) | p95 (s) "
        "| requests/s | new tokens/s | server CPU s/request | peak RSS (MB) | deployment peak RSS (MB) | ready in (s) "
        "| other CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    models = list(dict.fromkeys(s.model for s in served))
    for model in models:
        lines += [serving_row(s, ref) for s in served if s.model == model]
        lines += ratio_rows(model, served, args.client_counts)
    lines += SERVING_NOTES
    for model in models:
        lines += serving_details(model, [s for s in served if s.model == model])
    return lines


SERVING_NOTES = [
    "",
    "- Latency: client-side, from sending the request to reading the whole answer. requests/s and new tokens/s: "
    "completed requests and their generated tokens over the wall time of the measured batch (first request sent "
    "to last answer read). Server CPU: user+system seconds of the server processes during the batch, per request.",
    "- Other CPU: CPU used by processes other than this one and the server processes during the batch, in shares "
    "of one CPU (the machine is shared). Before each measured batch the benchmark waits (up to --quiet-wait "
    "seconds) until others use less than 25% of a CPU over 2 s.",
    "- Peak RSS: VmHWM (peak resident set) of each server process, read after the batch (so a later batch on the same "
    "server includes the earlier ones), summed (ours and before: router + deployment; mlflow: the `mlflow` CLI "
    "process and its `uvicorn` child). It includes loading the model. Deployment peak RSS: the deployment process "
    "alone (our CTranslate2 conversion runs in a child of it, not counted; it is cached by content).",
    '- Ours and before: `POST /score` (Azure ML contract, Bearer key) with parameters `{"max_new_tokens": 32, '
    '"min_new_tokens": 32, "do_sample": false}` (min_new_tokens is in the whitelist and honoured). '
    'mlflow: `POST /invocations` with `{"messages": [...], "max_tokens": 32, "top_k": 1}`; its '
    "llm/v1/chat signature drops unknown fields (min_new_tokens, do_sample; `SERVING_MODEL_CONFIG` is ignored "
    "because the model was logged without model_config), `temperature: 0` is an error (transformers refuses it "
    "with sampling on), and without top_k it samples. So the prompts are the first user turns of test "
    "conversations whose greedy answer runs to 32 tokens on its own: every server then generates the same "
    "32 tokens.",
    "- before: the router and deployment server of the baseline commit (a git worktree in .state/bench, run with "
    "PYTHONPATH and cwd there) on the same registered model folders, with the same threads as ours: one "
    "`generate` at a time behind a lock, transformers in float32.",
    "- `ours, N threads` (when shown): the same endpoint with the deployment started with `--threads N` "
    "(LocalEndpoints' serving_threads; LocalEngine leaves it at the default, default_threads), for reference.",
    "- Every server gets `OMP_WAIT_POLICY=PASSIVE` (what the engine gives its deployments) and "
    "`TOKENIZERS_PARALLELISM=false`; mlflow runs with `-t 600` so that no request times out.",
]


def serving_details(model: str, rows: list[ServeResult]) -> list[str]:
    lines = []
    for s in rows:
        if s.failure and not s.requests:
            lines.append(f"- {model}, {s.server}, {s.clients or 'no'} client(s): {s.threads}; FAILED: {s.failure}")
            continue
        rss = ", ".join(f"{name} {mb:,.0f} MB" for name, mb in s.rss.items())
        extra = f"; {s.errors} errors, e.g. {s.error_sample}" if s.errors else ""
        failure = f"; FAILED: {s.failure}" if s.failure else ""
        prompt = f"; mean prompt {s.prompt_tokens:.0f} tokens" if s.prompt_tokens else ""
        lines.append(
            f"- {model}, {s.server}, {s.clients} client(s): {s.threads}; tokens: {s.tokens_note}{prompt}; "
            f"peak RSS {rss}; before the batch: {s.quiet}; load average {s.load}{extra}{failure}"
        )
    ours = next((s for s in reversed(rows) if s.server == "ours" and s.outputs), None)
    for other in ("before", "mlflow"):
        theirs = next((s for s in reversed(rows) if s.server == other and s.outputs), None)
        if ours and theirs:
            same = sum(1 for k, text in ours.outputs.items() if text.strip() == theirs.outputs.get(k, "").strip())
            lines.append(
                f"- {model}: ours and {other} answer the {len(ours.outputs)} load prompts identically for {same}."
            )
    return lines


def _preset(model: str) -> str:
    from shared.domain.finetune import LOCAL_PRESETS

    preset = LOCAL_PRESETS.get(model, {})
    keys = ("num_train_epochs", "per_device_train_batch_size", "learning_rate", "max_seq_length")
    return ", ".join(f"{key} {preset[key]}" for key in keys if key in preset)


# -- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", default=f"{TINY},{SMOLLM2}", help="comma-separated local base models")
    parser.add_argument("--smollm2-steps", type=int, default=10, help="max_steps for SmolLM2 (batch 8)")
    parser.add_argument(
        "--requests", type=int, default=None, help=f"requests per client (default: tiny 25, smollm2 6, at least "
        f"{PROMPTS} with one client)"
    )  # fmt: skip
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts, each measured on each server")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="seconds to wait for a quiet machine before each phase (0: no)"
    )
    parser.add_argument(
        "--ours-threads",
        type=int,
        default=None,
        help="also measure our deployment with this many threads (default: all cores when that differs from "
        "the engine's default; 0: no)",
    )
    parser.add_argument(
        "--baseline-ref", default=BASELINE_REF, help="git ref of the server to compare with ('' skips it)"
    )
    parser.add_argument(
        "--engines-model",
        default=None,
        help=f"model of the engines phase (default: {SMOLLM2} when among --models, else the first; 'none' skips it)",
    )
    parser.add_argument("--engine-threads", type=int, default=2, help="threads of each engine in the engines phase")
    parser.add_argument("--near-tie", type=float, default=NEAR_TIE_LOGIT, help="largest logit margin of a near-tie")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 also when a target for {TARGET_MODEL} fails")
    args = parser.parse_args(argv)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    args.client_counts = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    if not args.model_list or not args.client_counts or min(args.client_counts) < 1:
        parser.error("--models and --clients need at least one entry each; client counts are positive")
    if args.ours_threads is None:
        from shared.engine.local.serving.deployment_server import default_threads

        cores = os.cpu_count() or 1
        args.ours_threads = cores if cores != default_threads() else 0
    if args.engines_model is None:
        args.engines_model = SMOLLM2 if SMOLLM2 in args.model_list else args.model_list[0]
    if args.engines_model == "none":
        args.engines_model = ""
    return args


def load_plans(args, model: str) -> list[LoadPlan]:
    """One plan per client count; requests per client as given, else the model's default (at least PROMPTS alone)."""
    plans = []
    for clients in args.client_counts:
        per_client = args.requests or DEFAULT_REQUESTS.get(model, 6)
        if args.requests is None and clients == 1:
            per_client = max(per_client, PROMPTS)
        plans.append(LoadPlan(clients=clients, per_client=per_client, quiet_wait_s=args.quiet_wait))
    return plans


def print_served(served: Served) -> None:
    for result in served.results:
        print(f"  {result.clients} client(s): {_summary(result)}", flush=True)
    if served.held_out is not None:
        held = served.held_out
        print(f"  held-out answers: {len(held.answers) - len(held.errors)} in {held.seconds:.1f} s", flush=True)
    if served.failure and any(r.measured for r in served.results):
        print(f"  failed afterwards: {served.failure}", flush=True)


def serve_model(args, engine, baseline: Path | None, trained: TrainResult, candidates, held_out, outcome: Outcome):
    """Every server on one registered model, one after another; then the held-out answers compared. Returns the
    model's registered folders and the prompts chosen for it."""
    from shared.domain.tags import RUN_TAG
    from shared.engine.local.registry import LocalRegistry

    model = trained.model
    model_ref = engine.register_model(
        trained.run_id, f"bench-{SHORT_NAMES.get(model, 'model')}", {RUN_TAG: trained.run_id}
    )
    folders = LocalRegistry(ENGINE_STATE).model_folders(model_ref)
    plans = load_plans(args, model)
    print(f"serving {model} ({model_ref.name} v{model_ref.version}) on our endpoint ...", flush=True)
    ours = serve_ours(engine, model_ref, model, candidates, plans, held_out=held_out)
    runs: list[tuple[str, Served]] = [("ours", ours)]
    print_served(ours)
    if args.ours_threads and ours.chosen:
        print(f"serving {model} on our endpoint with {args.ours_threads} threads ...", flush=True)
        threaded = EndpointsWithThreads(ENGINE_STATE, args.ours_threads)
        label = f"ours, {args.ours_threads} threads"
        runs.append((label, serve_ours(threaded, model_ref, model, candidates, plans, label, ours.chosen)))
        print_served(runs[-1][1])
    before = None
    if baseline is not None:
        print(f"serving {model} on the server before ({args.baseline_ref}) ...", flush=True)
        threads = ours.threads or deployment_threads(0)
        before = serve_baseline(baseline, args.baseline_ref, folders, model, ours.chosen, plans, threads, held_out)
        runs.append(("before", before))
        print_served(before)
    print(f"serving {model} with mlflow models serve ...", flush=True)
    runs.append(("mlflow", serve_mlflow(model_ref, model, ours.chosen, plans)))
    print_served(runs[-1][1])
    for server, served in runs:
        outcome.served += served.results
        if served.failure and any(r.measured for r in served.results):
            outcome.failures.append(f"{model}, {server}: {served.failure}")
    identity = None
    if before is not None and ours.held_out is not None and before.held_out is not None:
        print(f"comparing {model}'s held-out answers ...", flush=True)
        try:
            identity = compare_held_out(model, folders, held_out, ours.held_out, before.held_out)
        except Exception as exc:
            identity = Identity(model=model, failure=f"{type(exc).__name__}: {exc}")
        outcome.identities.append(identity)
    outcome.targets += evaluate_targets(model, outcome.served, identity, target_clients(args), args.near_tie)
    return folders, ours.chosen


def target_clients(args) -> int:
    """The client count the targets are read at: TARGET_CLIENTS, else the largest measured."""
    return TARGET_CLIENTS if TARGET_CLIENTS in args.client_counts else max(args.client_counts)


def engines_phase(args, folders: dict[str, tuple[Path, Path]], chosen: dict[str, list], candidates, outcome: Outcome):
    """The engines compared without HTTP, on the model the run trained (or its base model when it did not train)."""
    from bench_generation_engines import EnginesReport, compare_engines

    from shared.engine.local.serving_processes import CONVERTED_MODELS

    model = args.engines_model
    weights, tokenizer = folders.get(model) or (ENGINE_STATE / "models" / model, ENGINE_STATE / "models" / model)
    outcome.engines_model = model
    if not (weights / "config.json").exists():
        outcome.engines = EnginesReport(str(weights), 0, NEW_TOKENS, args.engine_threads, failure="no model folder")
        return
    prompts = (chosen.get(model) or candidates)[:PROMPTS]
    print(f"comparing generation engines on {model} ({len(prompts)} prompts x {NEW_TOKENS} tokens) ...", flush=True)
    try:
        outcome.engines = compare_engines(
            weights, tokenizer, prompts, new_tokens=NEW_TOKENS, threads=args.engine_threads,
            cache_dir=ENGINE_STATE / CONVERTED_MODELS, quiet_wait_s=args.quiet_wait,
        )  # fmt: skip
    except Exception as exc:
        outcome.engines = EnginesReport(str(weights), len(prompts), NEW_TOKENS, args.engine_threads)
        outcome.engines.failure = f"{type(exc).__name__}: {exc}"


def prepare_baseline(args, outcome: Outcome) -> Path | None:
    if not args.baseline_ref:
        return None
    try:
        return baseline_tree(args.baseline_ref)
    except Exception as exc:
        outcome.failures.append(f"the server before ({args.baseline_ref}): no worktree: {exc}")
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything imports torch; children inherit it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from shared.adapters.azurite import start_azurite
    from shared.adapters.storage import BlobStore
    from shared.engine.base import TrainingData
    from shared.engine.local.engine import LocalEngine
    from shared.settings import Settings

    ENGINE_STATE.mkdir(parents=True, exist_ok=True)
    load_start = fmt_load(os.getloadavg())
    lines = sample_lines()
    candidates = candidate_prompts(lines[TRAIN_ROWS:])
    held_out = held_out_conversations(lines[TRAIN_ROWS:])
    outcome = Outcome()
    folders: dict[str, tuple[Path, Path]] = {}
    chosen: dict[str, list] = {}
    azurite = None
    engine = None
    try:
        baseline = prepare_baseline(args, outcome)
        azurite = start_azurite(ENGINE_STATE / "azurite")
        store = BlobStore.from_settings(Settings(storage_connection_string=azurite.connection_string))
        container = f"bench-{uuid.uuid4().hex[:8]}"
        store.ensure_container(container)
        store.write(container, "run/train.jsonl", b"".join(lines[:TRAIN_ROWS]))
        store.write(container, "run/test.jsonl", b"".join(lines[TRAIN_ROWS:]))
        data = TrainingData(container=container, train_blob="run/train.jsonl", test_blob="run/test.jsonl")
        engine = LocalEngine(ENGINE_STATE, store, base_model=args.model_list[0])

        for model in args.model_list:
            print(f"training {model} ...", flush=True)
            result = train(engine, data, model, args.smollm2_steps, args.quiet_wait)
            print(
                f"  {result.status} in {result.wall_s:.0f} s: {result.tokens_per_second:,.0f} tokens/s, "
                f"peak RSS {result.peak_rss_mb or 0:,.0f} MB",
                flush=True,
            )
            outcome.trained.append(result)
        for result in outcome.trained:
            if result.status == "completed":
                folders[result.model], chosen[result.model] = serve_model(
                    args, engine, baseline, result, candidates, held_out, outcome
                )
        if args.engines_model:
            engines_phase(args, folders, chosen, candidates, outcome)
    finally:
        if engine is not None:
            for endpoint in engine.list_endpoints():
                if endpoint.name.startswith("bench-"):
                    engine.delete_endpoint(endpoint.name)
        if azurite is not None:
            azurite.stop()
    text = render(args, outcome, (load_start, fmt_load(os.getloadavg())))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"(written to {RESULTS.relative_to(REPO)})")
    return exit_status(args, outcome)


def exit_status(args, outcome: Outcome) -> int:
    """1 when a job, a server, a comparison or the engines phase failed; with --strict, also when a target of
    TARGET_MODEL failed."""
    engines = outcome.engines
    failed = (
        [t for t in outcome.trained if t.status != "completed"]
        + [s for s in outcome.served if s.failure]
        + [i for i in outcome.identities if i.failure]
        + outcome.failures
        + ([engines] if engines is not None and (engines.failure or any(r.error for r in engines.runs)) else [])
    )
    missed = [t for t in outcome.targets if t.model == TARGET_MODEL and t.passed is False]
    return 1 if failed or (args.strict and missed) else 0


def _summary(result: ServeResult) -> str:
    if result.failure and not result.requests:
        return f"failed: {result.failure}"
    return (
        f"{result.requests} requests ({result.errors} errors), p50 {result.p50:.3f} s, p95 {result.p95:.3f} s, "
        f"{result.req_per_s:.2f} req/s, {result.tok_per_s:.1f} new tokens/s, peak RSS {result.peak_rss_mb:,.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
