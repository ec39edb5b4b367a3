"""Benchmark: the local engine's training throughput, and its endpoint against `mlflow models serve`.

    python benchmarks/bench_local_engine.py                        # tiny and SmolLM2 (about 10 minutes)
    python benchmarks/bench_local_engine.py --models tiny --requests 10
    python benchmarks/bench_local_engine.py --smollm2-steps 10 --clients 8

In one run, with one LocalEngine over a real Azurite (state in .state/bench/local-engine/, reused across runs so
the SmolLM2 conversion is cached):
1. training: for each model, a job on the first 200 conversations of samples/ultrachat_sample.jsonl (the other
   40 are the test split), with the engine's preset (parameters_for(LOCAL_PRESETS[model])); SmolLM2 is bounded with
   max_steps. Tokens/s come from the job's metrics.json; the job's wall time and the worker's peak RSS are
   measured here (the worker is this process's child: its exact ru_maxrss comes from wait4).
2. serving: the trained model is registered, deployed on a local endpoint (100% traffic) and measured with
   concurrent keep-alive clients on POST /score; then the endpoint is deleted and the same registered version is
   served by `mlflow models serve --env-manager local` and measured the same way on POST /invocations.
Warm-up requests are excluded; the servers are measured one at a time. The table is printed and written to
.state/bench/local-engine-results.md. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(REPO))

STATE = REPO / ".state" / "bench"
ENGINE_STATE = STATE / "local-engine"
RESULTS = STATE / "local-engine-results.md"
SAMPLE = REPO / "samples" / "ultrachat_sample.jsonl"
CONVERSION_CACHES = (REPO / ".state" / "demo" / "models",)  # where an earlier conversion may be copied from
TRAIN_ROWS = 200
TINY, SMOLLM2 = "tiny", "smollm2-135m-instruct"
SHORT_NAMES = {TINY: "tiny", SMOLLM2: "smollm2"}
DEFAULT_REQUESTS = {TINY: 25, SMOLLM2: 6}  # per client
NEW_TOKENS = 32
DEPLOYMENT = "blue"
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
    tokens_note: str = ""
    prompt_tokens: float = 0.0
    cpu_s_per_request: float | None = None
    rss: dict[str, float] = field(default_factory=dict)  # process -> peak RSS MB (VmHWM)
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


@dataclass(frozen=True)
class LoadPlan:
    clients: int
    per_client: int
    quiet_wait_s: float


def measure(result: ServeResult, port: int, send: Send, prompts: int, plan: LoadPlan, pids: list[int]) -> LoadRun:
    clients, per_client = plan.clients, plan.per_client
    problems = warm_up(port, send, prompts, clients)
    if problems:
        raise RuntimeError(f"warm-up failed: {problems[0]}")
    result.quiet = wait_for_quiet(plan.quiet_wait_s) if plan.quiet_wait_s > 0 else "not waited for"
    cpu_before = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    other = OtherCpu(lambda: sum(cpu_seconds(pid) or 0.0 for pid in pids))
    run = run_load(port, send, prompts, clients, per_client)
    other.stop()
    cpu_after = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    result.clients, result.per_client = clients, per_client
    result.requests, result.errors = len(run.latencies), len(run.errors)
    result.error_sample = run.errors[0][:200] if run.errors else ""
    result.p50, result.p95 = percentile(run.latencies, 0.50), percentile(run.latencies, 0.95)
    result.req_per_s = len(run.latencies) / run.wall_s
    result.tok_per_s = sum(run.tokens) / run.wall_s
    result.tokens_per_request = sum(run.tokens) / len(run.tokens) if run.tokens else 0.0
    result.cpu_s_per_request = (cpu_after - cpu_before) / max(1, len(run.latencies))
    result.other_cpu, result.load = other.share, f"{fmt_load(other.load_before)} -> {fmt_load(other.load_after)}"
    result.outputs = run.outputs
    return run


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
    `serving_threads`, which LocalEngine leaves at its default (half the cores)."""

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
    engine, model_ref, model: str, candidates, plan: LoadPlan, server: str = "ours", prompts: list | None = None
) -> tuple[ServeResult, list]:
    """Deploy on a local endpoint and measure it. Without `prompts`, they are chosen on this deployment."""
    from shared.domain.tags import MANAGED_TAG

    result = ServeResult(model=model, server=server)
    name = f"bench-{SHORT_NAMES.get(model, 'model')}"
    chosen: list[list[dict[str, str]]] = list(prompts or [])
    try:
        started = time.monotonic()
        engine.create_or_update_endpoint(name, {MANAGED_TAG: "true"})
        engine.create_deployment(name, DEPLOYMENT, model_ref)
        engine.set_traffic(name, {DEPLOYMENT: 100})
        result.ready_s = time.monotonic() - started
        config = endpoint_config(name)
        spec = config["deployments"][DEPLOYMENT]
        router_pid, deployment_pid, deployment_port = config["router_pid"], spec["pid"], spec["port"]
        result.threads = f"deployment: torch {deployment_threads(deployment_pid)} thread(s), one generate at a time"

        if chosen:
            how = "the same as for the first deployment"
        else:
            indices, how = choose_prompts(deployment_port, candidates, plan.clients)
            chosen = [candidates[i] for i in indices]
        key = engine.get_keys(name).primary
        parameters = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
        # the exact count for each prompt, from the deployment itself with the same parameters
        verified = [generate_direct(deployment_port, c, parameters)["details"][0] for c in chosen]
        counts = [int(d["completion_tokens"]) for d in verified]
        result.prompt_tokens = sum(int(d["prompt_tokens"]) for d in verified) / len(verified)
        result.tokens_note = (
            f"min_new_tokens = max_new_tokens = {NEW_TOKENS}; /generate with the same parameters returned "
            f"{sorted(set(counts))} completion tokens for the {len(chosen)} prompts; prompts: {how}"
        )
        headers = {"Authorization": f"Bearer {key}"}

        def send(client: Client, prompt: int) -> Reply:
            body = {"input_data": {"input_string": chosen[prompt], "parameters": parameters}, "params": {}}
            status, answer = client.post("/score", body, headers)
            if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("output"), str):
                return Reply(ok=False, error=f"HTTP {status}: {str(answer)[:200]}")
            return Reply(ok=True, text=answer["output"], tokens=counts[prompt])

        measure(result, config["port"], send, len(chosen), plan, [router_pid, deployment_pid])
        result.rss = {
            "router": (vm_kb(router_pid, "VmHWM") or 0) / 1024,
            "deployment": (vm_kb(deployment_pid, "VmHWM") or 0) / 1024,
        }
    except Exception as exc:
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        engine.delete_endpoint(name)
    return result, chosen


def deployment_threads(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return args[args.index(b"--threads") + 1].decode()
    except (OSError, ValueError, IndexError):
        from shared.engine.local.serving.deployment_server import default_threads

        return str(default_threads())


# -- mlflow models serve ------------------------------------------------------------------------------------


def serve_mlflow(model_ref, model: str, chosen, plan: LoadPlan) -> ServeResult:
    from shared.engine.local.mlflow_store import tracking_uri
    from shared.engine.local.processes import free_port

    result = ServeResult(model=model, server="mlflow")
    result.threads = "uvicorn, 1 worker; each request in a thread (asyncio.to_thread): generations run concurrently"
    if not chosen:
        result.failure = "no prompts (our endpoint failed before choosing them)"
        return result
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
        result.ready_s = time.monotonic() - started
        pids = process_tree(process.pid)
        result.threads += f"; torch {mlflow_torch_threads()} thread(s) per generation"
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

        run = measure(result, port, send, len(chosen), plan, pids)
        counts = sorted(set(run.tokens))
        result.tokens_note = f"max_tokens {NEW_TOKENS}, top_k 1 (greedy); usage.completion_tokens per request: {counts}"
        names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in process_tree(process.pid)}
        result.rss = {f"{names[pid]} ({pid})": (vm_kb(pid, "VmHWM") or 0) / 1024 for pid in names}
    except Exception as exc:
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        if process is not None:
            stop_group(process)
        shutil.rmtree(scratch, ignore_errors=True)
    return result


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


# -- report -------------------------------------------------------------------------------------------------


def ratio(ours: float | None, theirs: float | None, digits: int = 2) -> str:
    if ours is None or theirs is None or not theirs or ours != ours or theirs != theirs:
        return "n/a"
    return f"{ours / theirs:.{digits}f}x"


def render(args, trained: list[TrainResult], served: list[ServeResult], run_load_avg: tuple[str, str]) -> str:
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
    lines += [
        "",
        "## Serving: our local endpoint vs `mlflow models serve`",
        "",
        f"{args.clients} concurrent clients (threads, one keep-alive HTTP/1.1 connection each), each sending its "
        "requests back to back; every request asks for "
        f"{NEW_TOKENS} new tokens, greedy. Warm-up requests (one alone, then one per client) are excluded. "
        "The servers are measured one at a time: our endpoint is deleted before mlflow starts.",
        "",
        "| model | server | requests (errors) | new tokens/request | p50 (s) | p95 (s) | requests/s | new tokens/s "
        "| server CPU s/request | peak RSS (MB) | ready in (s) | other CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_model: dict[str, dict[str, ServeResult]] = {}
    for s in served:
        by_model.setdefault(s.model, {})[s.server] = s
    for model, pair in by_model.items():
        for server, s in pair.items():
            label = {"ours": "ours (router + deployment)", "mlflow": "mlflow models serve"}.get(server, server)
            if s.failure and not s.requests:
                lines.append(f"| {model} | {label} | failed: {s.failure[:150]} |" + " |" * 9)
                continue
            lines.append(
                f"| {model} | {label} | {s.requests} ({s.errors}) | {s.tokens_per_request:.1f} | {s.p50:.3f} "
                f"| {s.p95:.3f} | {s.req_per_s:.2f} | {s.tok_per_s:.1f} | {s.cpu_s_per_request:.3f} "
                f"| {s.peak_rss_mb:,.0f} | {s.ready_s:.1f} | {s.other_cpu:.0%} |"
            )
        theirs = pair.get("mlflow")
        for server, ours in pair.items():
            if server == "mlflow" or not theirs or not ours.requests or not theirs.requests:
                continue
            lines.append(
                f"| {model} | **{server} / mlflow** | | {ratio(ours.tokens_per_request, theirs.tokens_per_request)} "
                f"| {ratio(ours.p50, theirs.p50)} | {ratio(ours.p95, theirs.p95)} "
                f"| {ratio(ours.req_per_s, theirs.req_per_s)} | {ratio(ours.tok_per_s, theirs.tok_per_s)} "
                f"| {ratio(ours.cpu_s_per_request, theirs.cpu_s_per_request)} "
                f"| {ratio(ours.peak_rss_mb, theirs.peak_rss_mb)} | {ratio(ours.ready_s, theirs.ready_s)} | |"
            )
    lines += [
        "",
        "- Latency: client-side, from sending the request to reading the whole answer. requests/s and new tokens/s: "
        "completed requests and their generated tokens over the wall time of the measured batch (first request sent "
        "to last answer read). Server CPU: user+system seconds of the server processes during the batch, per request.",
        "- Other CPU: CPU used by processes other than this one and the server processes during the batch, in shares "
        "of one CPU (the machine is shared). Before each measured phase the benchmark waits (up to --quiet-wait "
        "seconds) until others use less than 25% of a CPU over 2 s.",
        "- Peak RSS: VmHWM (peak resident set) of each server process, read after the batch, summed (ours: router + "
        "deployment; mlflow: the `mlflow` CLI process and its `uvicorn` child). It includes loading the model.",
        '- Ours: `POST /score` (Azure ML contract, Bearer key) with parameters `{"max_new_tokens": 32, '
        '"min_new_tokens": 32, "do_sample": false}` (min_new_tokens is in the whitelist and honoured). '
        'mlflow: `POST /invocations` with `{"messages": [...], "max_tokens": 32, "top_k": 1}`; its '
        "llm/v1/chat signature drops unknown fields (min_new_tokens, do_sample; `SERVING_MODEL_CONFIG` is ignored "
        "because the model was logged without model_config), `temperature: 0` is an error (transformers refuses it "
        "with sampling on), and without top_k it samples. So the prompts are the first user turns of test "
        "conversations whose greedy answer runs to 32 tokens on its own: both servers then generate the same "
        "32 tokens.",
        "- `ours, N threads` (when shown): the same endpoint with the deployment started with `--threads N` "
        "(LocalEndpoints' serving_threads; LocalEngine leaves it at the default, half the cores), for reference.",
        "- Both servers get `OMP_WAIT_POLICY=PASSIVE` (what the engine gives its deployments) and "
        "`TOKENIZERS_PARALLELISM=false`; mlflow runs with `-t 600` so that no request times out.",
    ]
    for model, pair in by_model.items():
        for server, s in pair.items():
            rss = ", ".join(f"{name} {mb:,.0f} MB" for name, mb in s.rss.items())
            extra = f"; {s.errors} errors, e.g. {s.error_sample}" if s.errors else ""
            failure = f"; FAILED: {s.failure}" if s.failure else ""
            prompt = f"; mean prompt {s.prompt_tokens:.0f} tokens" if s.prompt_tokens else ""
            lines.append(
                f"- {model}, {server}: {s.threads}; tokens: {s.tokens_note}{prompt}; peak RSS {rss}; "
                f"before the batch: {s.quiet}; load average {s.load}{extra}{failure}"
            )
        ours, theirs = pair.get("ours"), pair.get("mlflow")
        if ours and theirs and ours.outputs and theirs.outputs:
            same = sum(
                1
                for k, text in ours.outputs.items()
                if k in theirs.outputs and text.strip() == theirs.outputs[k].strip()
            )
            lines.append(
                f"- {model}: the two servers' answers are identical for {same} of {len(ours.outputs)} prompts."
            )
    lines.append("")
    return "\n".join(lines)


def _preset(model: str) -> str:
    from shared.domain.finetune import LOCAL_PRESETS

    preset = LOCAL_PRESETS.get(model, {})
    keys = ("num_train_epochs", "per_device_train_batch_size", "learning_rate", "max_seq_length")
    return ", ".join(f"{key} {preset[key]}" for key in keys if key in preset)


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", default=f"{TINY},{SMOLLM2}", help="comma-separated local base models")
    parser.add_argument("--smollm2-steps", type=int, default=10, help="max_steps for SmolLM2 (batch 8)")
    parser.add_argument("--requests", type=int, default=None, help="requests per client (default: tiny 25, smollm2 6)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="seconds to wait for a quiet machine before each phase (0: no)"
    )
    parser.add_argument(
        "--ours-threads",
        type=int,
        default=None,
        help="also measure our deployment with this many torch threads (default: all cores when that differs from "
        "the engine's default; 0: no)",
    )
    args = parser.parse_args(argv)
    if args.ours_threads is None:
        from shared.engine.local.serving.deployment_server import default_threads

        cores = os.cpu_count() or 1
        args.ours_threads = cores if cores != default_threads() else 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything imports torch; children inherit it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from shared.adapters.azurite import start_azurite
    from shared.adapters.storage import BlobStore
    from shared.domain.tags import RUN_TAG
    from shared.engine.base import TrainingData
    from shared.engine.local.engine import LocalEngine
    from shared.settings import Settings

    ENGINE_STATE.mkdir(parents=True, exist_ok=True)
    load_start = fmt_load(os.getloadavg())
    lines = sample_lines()
    candidates = candidate_prompts(lines[TRAIN_ROWS:])
    trained: list[TrainResult] = []
    served: list[ServeResult] = []
    azurite = None
    engine = None
    try:
        azurite = start_azurite(ENGINE_STATE / "azurite")
        store = BlobStore.from_settings(Settings(storage_connection_string=azurite.connection_string))
        container = f"bench-{uuid.uuid4().hex[:8]}"
        store.ensure_container(container)
        store.write(container, "run/train.jsonl", b"".join(lines[:TRAIN_ROWS]))
        store.write(container, "run/test.jsonl", b"".join(lines[TRAIN_ROWS:]))
        data = TrainingData(container=container, train_blob="run/train.jsonl", test_blob="run/test.jsonl")
        engine = LocalEngine(ENGINE_STATE, store, base_model=models[0])

        for model in models:
            print(f"training {model} ...", flush=True)
            result = train(engine, data, model, args.smollm2_steps, args.quiet_wait)
            print(
                f"  {result.status} in {result.wall_s:.0f} s: {result.tokens_per_second:,.0f} tokens/s, "
                f"peak RSS {result.peak_rss_mb or 0:,.0f} MB",
                flush=True,
            )
            trained.append(result)
        for result in trained:
            if result.status != "completed":
                continue
            model_ref = engine.register_model(
                result.run_id, f"bench-{SHORT_NAMES.get(result.model, 'model')}", {RUN_TAG: result.run_id}
            )
            per_client = args.requests or DEFAULT_REQUESTS.get(result.model, 6)
            plan = LoadPlan(clients=args.clients, per_client=per_client, quiet_wait_s=args.quiet_wait)
            print(f"serving {result.model} ({model_ref.name} v{model_ref.version}) on our endpoint ...", flush=True)
            ours, chosen = serve_ours(engine, model_ref, result.model, candidates, plan)
            served.append(ours)
            print(f"  {_summary(ours)}", flush=True)
            if args.ours_threads and chosen:
                label = f"ours, {args.ours_threads} threads"
                print(f"serving {result.model} on our endpoint with {args.ours_threads} torch threads ...", flush=True)
                threaded = EndpointsWithThreads(ENGINE_STATE, args.ours_threads)
                variant, _ = serve_ours(threaded, model_ref, result.model, candidates, plan, label, chosen)
                served.append(variant)
                print(f"  {_summary(variant)}", flush=True)
            print(f"serving {result.model} with mlflow models serve ...", flush=True)
            theirs = serve_mlflow(model_ref, result.model, chosen, plan)
            served.append(theirs)
            print(f"  {_summary(theirs)}", flush=True)
    finally:
        if engine is not None:
            for endpoint in engine.list_endpoints():
                if endpoint.name.startswith("bench-"):
                    engine.delete_endpoint(endpoint.name)
        if azurite is not None:
            azurite.stop()
    text = render(args, trained, served, (load_start, fmt_load(os.getloadavg())))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"(written to {RESULTS.relative_to(REPO)})")
    failed = [t for t in trained if t.status != "completed"] + [s for s in served if s.failure]
    return 1 if failed else 0


def _summary(result: ServeResult) -> str:
    if result.failure and not result.requests:
        return f"failed: {result.failure}"
    return (
        f"{result.requests} requests ({result.errors} errors), p50 {result.p50:.3f} s, p95 {result.p95:.3f} s, "
        f"{result.req_per_s:.2f} req/s, {result.tok_per_s:.1f} new tokens/s, peak RSS {result.peak_rss_mb:,.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
