"""Benchmark: the timer's sweep over a run ledger of many records, with the ledger's index and with a full scan.

    python benchmarks/bench_ledger_sweep.py                          # 10,000 records over 50 lines; see README
    python benchmarks/bench_ledger_sweep.py --records 2000 --indexed-rounds 3

One run, one real Azurite (`start_azurite`, as the tests use it), one runs container. The script writes `--records`
run records over `--lines` lines (through BlobStore, in a thread pool: record blobs only, no kept copies), most of
them in terminal states and about `--active-share` of them active (submitted, running, trained, registered,
deploying), a few deployed on live endpoints; then it times `RunLedger.rebuild_index()`, which writes the markers
(what the first sweep after an upgrade does). Then, on the same data and in the same process:

1. indexed:   `shared.usecases.sweep.sweep(ctx)` with the normal RunLedger;
2. full scan: the same sweep with a RunLedger whose index is off (`_indexed()` is False, `ensure_index()` does
   nothing): every filtered listing reads every record, as the ledger did before the index.

Each is timed (wall, and the CPU of this process and of Azurite) and its storage calls are counted by a BlobStore
subclass (read, iter_chunks, info and list_names are "reads"; writes and deletes are counted to show there are
none). The target (from the issue): the sweep reads O(active runs) blobs, at least 20 times fewer than the full scan.
The report is printed and written to .state/bench/ledger-sweep-results.md and .json; the exit status is 0 when the
targets are met.

Choices that keep the comparison fair:

- The engine is tests.fakes.FakeEngine (the Azure ML boundary). The submitted runs' jobs exist in it as queued and
  the running runs' as running, so reconcile asks about each one and gets an answer that changes nothing (a running
  run re-reads its record, as it would in production). The live endpoints were used a minute ago, so none is idle.
- RECONCILE_AFTER_MINUTES is huge, so trained/registered/deploying runs are listed and looked at but not resumed.
  Resuming them would register, deploy and shift traffic on the fake engine and write records: the first sweep
  would change the ledger under the second (the two modes would no longer do the same work) and the engine's work,
  the same in both modes, would only blur what differs, the listings. The script checks that neither sweep writes
  or deletes a blob and that both return the same outcome.
- In the full-scan mode the ledger's `drop_stale` (a listing deletes the markers of states a record it read is no
  longer in) is made inert: with the index off every record outside the wanted states would cost one delete per
  wanted state, which the ledger before the index never sent. The report counts the deletes it would have sent;
  `--keep-drop-stale` sends them.
- Each round builds a fresh context (a host's first sweep: the index's `complete` marker is looked up once). The
  indexed sweep is cheap and runs `--indexed-rounds` times; the full scan `--full-rounds` times (default once: at
  10,000 records it reads 50,000 blobs). The modes alternate; the table shows the fastest round and the median.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import psutil  # noqa: E402

from shared.adapters.azurite import Azurite, start_azurite  # noqa: E402
from shared.adapters.ledger import RECORDS, RunLedger, RunListing  # noqa: E402
from shared.adapters.run_index import RunIndex  # noqa: E402
from shared.adapters.storage import BlobStore  # noqa: E402
from shared.context import AppContext  # noqa: E402
from shared.domain.jobs import JobStatus  # noqa: E402
from shared.domain.lines import DEFAULT_LINE, LineConfig, line_config_blob  # noqa: E402
from shared.domain.naming import deployment_name_for, endpoint_name_for, line_model_name  # noqa: E402
from shared.domain.runs import (  # noqa: E402
    DatasetRef,
    EndpointRef,
    GateResult,
    ModelVersion,
    RunArtifacts,
    RunError,
    RunMetrics,
    RunRecord,
    RunState,
    SmokeTestResult,
    ValidationSummary,
    advance,
    new_run,
)
from shared.domain.tags import MANAGED_TAG  # noqa: E402
from shared.engine.base import EndpointInfo, JobInfo  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.usecases.lifecycle.jobs import ACTIVE_STATES  # noqa: E402
from shared.usecases.lines import effective  # noqa: E402
from shared.usecases.sweep import SweepOutcome, sweep  # noqa: E402
from tests.fakes import FakeEngine  # noqa: E402

STATE = REPO / ".state" / "bench"
RESULTS_MD = STATE / "ledger-sweep-results.md"
RESULTS_JSON = STATE / "ledger-sweep-results.json"
RUNS = "runs-bench"
DATASETS = "datasets-bench"

MIN_READ_RATIO = 20.0  # the target: the full scan reads at least 20x more blobs than the indexed sweep
READ_OPS = ("read", "iter_chunks", "info", "list_names")
WRITE_OPS = ("write", "delete", "try_lease")
BUSY_SHARE = 0.10  # of one CPU, used by other processes while the sweeps ran: past it the report flags the run

S = RunState
# Each state's path from received, as the lifecycle takes a run there.
_TO_RUNNING = (S.VALIDATING, S.SUBMITTED, S.RUNNING)
_TO_DEPLOYING = (*_TO_RUNNING, S.TRAINED, S.REGISTERED, S.DEPLOYING)
PATHS: dict[RunState, tuple[RunState, ...]] = {
    S.REJECTED: (S.VALIDATING, S.REJECTED),
    S.SUBMITTED: (S.VALIDATING, S.SUBMITTED),
    S.RUNNING: _TO_RUNNING,
    S.FAILED: (*_TO_RUNNING, S.FAILED),
    S.CANCELED: (*_TO_RUNNING, S.CANCELED),
    S.TRAINED: (*_TO_RUNNING, S.TRAINED),
    S.GATED_OUT: (*_TO_RUNNING, S.TRAINED, S.GATED_OUT),
    S.REGISTERED: (*_TO_RUNNING, S.TRAINED, S.REGISTERED),
    S.DEPLOYING: _TO_DEPLOYING,
    S.ROLLED_BACK: (*_TO_DEPLOYING, S.ROLLED_BACK),
    S.DEPLOYED: (*_TO_DEPLOYING, S.DEPLOYED),
    S.SUPERSEDED: (*_TO_DEPLOYING, S.DEPLOYED, S.SUPERSEDED),
    S.TORN_DOWN: (*_TO_DEPLOYING, S.DEPLOYED, S.TORN_DOWN),
}
# The terminal runs other than the deployed and torn-down ones (whose numbers are set), by share.
TERMINAL_MIX = {
    S.SUPERSEDED: 0.40,
    S.GATED_OUT: 0.22,
    S.REJECTED: 0.18,
    S.FAILED: 0.12,
    S.CANCELED: 0.04,
    S.ROLLED_BACK: 0.04,
}
ACTIVE_MIX = {S.SUBMITTED: 0.30, S.RUNNING: 0.30, S.TRAINED: 0.10, S.REGISTERED: 0.15, S.DEPLOYING: 0.15}


# -- counting storage calls (the benchmark's own: shared/ is measured as it is) ---------------------------------


class CountingStore(BlobStore):
    """BlobStore that counts its calls per (operation, container), and the names its listings return."""

    def __init__(self, service: Any) -> None:
        super().__init__(service)
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def _count(self, operation: str, container: str, n: int = 1) -> None:
        with self._lock:
            self.counts[(operation, container)] += n

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.counts)

    def read(self, container: str, name: str) -> tuple[bytes, str]:
        self._count("read", container)
        return super().read(container, name)

    def iter_chunks(self, container: str, name: str, *, etag: str | None = None) -> Iterator[bytes]:
        self._count("iter_chunks", container)
        return super().iter_chunks(container, name, etag=etag)

    def info(self, container: str, name: str) -> Any:
        self._count("info", container)
        return super().info(container, name)

    def list_names(self, container: str, prefix: str | None = None) -> Iterator[str]:
        self._count("list_names", container)
        for name in super().list_names(container, prefix):
            self._count("names_listed", container)
            yield name

    def write(self, container: str, name: str, data: Any, **kwargs: Any) -> str:
        self._count("write", container)
        return super().write(container, name, data, **kwargs)

    def delete(self, container: str, name: str) -> None:
        self._count("delete", container)
        super().delete(container, name)

    def try_lease(self, container: str, name: str, duration_s: int) -> Any:
        self._count("try_lease", container)
        return super().try_lease(container, name, duration_s)


def reads_of(counts: Counter[tuple[str, str]], container: str | None = None) -> int:
    return sum(n for (op, where), n in counts.items() if op in READ_OPS and (container is None or where == container))


def writes_of(counts: Counter[tuple[str, str]]) -> int:
    return sum(n for (op, _), n in counts.items() if op in WRITE_OPS)


@dataclass
class ListingCall:
    filters: str
    records: int  # what the listing returned (before its limit)
    blob_reads: int  # record reads (`read`) it made
    other_reads: int  # info and list calls it made


class CountingLedger(RunLedger):
    """The normal ledger, noting what each listing read (for the per-listing table)."""

    def __init__(self, store: CountingStore, container: str) -> None:
        super().__init__(store, container)
        self.counting_store = store
        self.calls: list[ListingCall] = []

    def listing(
        self,
        *,
        states: Collection[RunState] | None = None,
        line: str | None = None,
        limit: int = 100,
    ) -> RunListing:
        before = self.counting_store.snapshot()
        result = super().listing(states=states, line=line, limit=limit)
        after = self.counting_store.snapshot()
        after.subtract(before)
        wanted = sorted(states or ())
        filters = "+".join(wanted) if wanted else "all"
        if line is not None:
            filters += f", line {line}"
        self.calls.append(
            ListingCall(
                filters=filters,
                records=len(result.records),
                blob_reads=after[("read", self._container)],
                other_reads=reads_of(after) - after[("read", self._container)],
            )
        )
        return result


class InertDropIndex(RunIndex):
    """The index of the full-scan ledger: `drop_stale` deletes nothing and counts the deletes it would have sent."""

    def __init__(self, store: BlobStore, container: str) -> None:
        super().__init__(store, container)
        self.would_delete = 0

    def drop_stale(self, record: RunRecord, states: Iterable[RunState]) -> None:
        self.would_delete += sum(1 for state in states if state != record.state)


class FullScanLedger(CountingLedger):
    """The ledger as it was before the index: every filtered listing reads every record."""

    def __init__(self, store: CountingStore, container: str, *, keep_drop_stale: bool = False) -> None:
        super().__init__(store, container)
        if not keep_drop_stale:
            self.index = InertDropIndex(store, container)

    def _indexed(self) -> bool:
        return False

    def ensure_index(self) -> None:
        pass  # nothing to build: there is no index


# -- the data -----------------------------------------------------------------------------------------------------


@dataclass
class Fleet:
    records: list[RunRecord]
    lines: list[str]
    live_lines: list[str]
    by_state: Counter[str] = field(default_factory=Counter)


def line_names(count: int) -> list[str]:
    return [DEFAULT_LINE] + [f"line-{k:02d}" for k in range(1, count)]


def line_json(line: str, k: int) -> LineConfig:
    """Some lines set their own idle time or gate, most take the settings' (what the teardown reads)."""
    if k % 3 == 1:
        return LineConfig(idle_minutes=120)
    if k % 3 == 2:
        return LineConfig.model_validate({"gate": {"min_improvement": 0.01}})
    return LineConfig()


def plan_states(records: int, active_share: float, live: int, torn_down: int, rng: random.Random) -> list[RunState]:
    active = max(len(ACTIVE_MIX), round(records * active_share))
    states: list[RunState] = []
    for state, share in ACTIVE_MIX.items():
        states += [state] * round(active * share)
    states += [S.DEPLOYED] * live + [S.TORN_DOWN] * torn_down
    rest = records - len(states)
    terminal = list(TERMINAL_MIX)
    states += rng.choices(terminal, weights=[TERMINAL_MIX[s] for s in terminal], k=rest)
    return states[:records]


def build_fleet(ctx: AppContext, args: argparse.Namespace, now: datetime) -> Fleet:
    rng = random.Random(args.seed)
    lines = line_names(args.lines)
    configs = {line: effective(ctx, line, line_json(line, k)) for k, line in enumerate(lines)}
    live_lines = lines[: args.endpoints]
    # lines busier than others (a few carry most uploads), the live ones among the busy
    weights = [1.0 / (k + 1) ** 0.7 for k in range(len(lines))]
    states = plan_states(args.records, args.active_share, len(live_lines), args.torn_down, rng)
    torn_lines = iter(lines[len(live_lines) :] * 10)
    live = iter(live_lines)
    versions: Counter[str] = Counter()
    records = []
    for i, state in enumerate(states):
        if state == S.DEPLOYED:
            line = next(live)
        elif state == S.TORN_DOWN:
            line = next(torn_lines)
        else:
            line = rng.choices(lines, weights=weights)[0]
        config = configs[line]
        run_id = "ft-" + hashlib.sha256(f"bench-{args.seed}-{i}".encode()).hexdigest()[:12]
        if state in ACTIVE_STATES:
            created = now - timedelta(minutes=rng.uniform(20, 600))
        elif state == S.DEPLOYED:
            created = now - timedelta(days=rng.uniform(1, 10))
        else:
            created = now - timedelta(days=rng.uniform(10, 400))
        records.append(_record(ctx, run_id, state, line, config, created, versions, rng))
    records.sort(key=lambda record: record.created_at)
    return Fleet(records=records, lines=lines, live_lines=live_lines, by_state=Counter(r.state for r in records))


def _record(
    ctx: AppContext,
    run_id: str,
    state: RunState,
    line: str,
    config: Any,
    created: datetime,
    versions: Counter[str],
    rng: random.Random,
) -> RunRecord:
    rows = rng.randint(200, 50_000)
    test_rows = max(1, rows // 10)
    blob = f"{line}/upload-{run_id[3:9]}.jsonl" if line != DEFAULT_LINE else f"upload-{run_id[3:9]}.jsonl"
    dataset = DatasetRef(
        container=DATASETS,
        blob=blob,
        sha256=hashlib.sha256(run_id.encode()).hexdigest(),
        size_bytes=rows * rng.randint(900, 4000),
        etag=f'"0x8DC{run_id[3:15].upper()}"',
        uploaded_at=created - timedelta(seconds=rng.uniform(1, 30)),
    )
    record = new_run(
        run_id=run_id,
        dataset=dataset,
        parameters=config.parameters,
        base_model=config.base_model,
        engine=ctx.profile.name,
        now=created,
        line_config=config,
    )
    model_name = line_model_name(line, config.base_model, ctx.settings.finetuned_model_suffix)
    endpoint = endpoint_name_for(model_name, ctx.profile.endpoint_scope)
    at = created
    for step in PATHS[state]:
        at += timedelta(seconds=rng.uniform(5, 1800))
        changes: dict[str, Any] = {}
        if step == S.VALIDATING:
            prefix = f"{RUNS}/runs/{run_id}"
            changes = {
                "artifacts": RunArtifacts(report_json=f"{prefix}/validation.json", report_md=f"{prefix}/validation.md")
            }
        elif step == S.REJECTED:
            changes = {
                "validation": ValidationSummary(
                    valid=False,
                    rows=rows,
                    train_rows=0,
                    test_rows=0,
                    error_counts={"invalid_json": rng.randint(1, 40), "empty_content": rng.randint(0, 9)},
                    warning_counts={},
                ),
                "error": RunError(code="dataset_invalid", message="the dataset has errors; see the report"),
            }
        elif step == S.SUBMITTED:
            prefix = f"{RUNS}/runs/{run_id}"
            changes = {
                "validation": ValidationSummary(
                    valid=True,
                    rows=rows,
                    train_rows=rows - test_rows,
                    test_rows=test_rows,
                    error_counts={},
                    warning_counts={"long_conversation": rng.randint(0, 30)},
                ),
                "artifacts": record.artifacts.model_copy(
                    update={"train": f"{prefix}/train.jsonl", "test": f"{prefix}/test.jsonl"}
                ),
                "job_name": run_id,
            }
        elif step == S.TRAINED:
            loss = rng.uniform(0.6, 1.4)
            changes = {
                "metrics": RunMetrics(
                    train_loss=loss - 0.1,
                    eval_loss=loss,
                    base_eval_loss=loss + rng.uniform(-0.1, 0.5),
                    perplexity=2.0 + loss,
                    mean_token_accuracy=rng.uniform(0.4, 0.7),
                ),
                "artifacts": record.artifacts.model_copy(
                    update={
                        "loss_curve": f"{RUNS}/runs/{run_id}/loss.svg",
                        "training_report": f"{RUNS}/runs/{run_id}/training.md",
                    }
                ),
            }
        elif step == S.GATED_OUT:
            changes = {"gate": GateResult(passed=False, reasons=["eval_loss did not improve on the base model"])}
        elif step == S.REGISTERED:
            versions[model_name] += 1
            changes = {
                "gate": GateResult(passed=True, reasons=[]),
                "model": ModelVersion(name=model_name, version=str(versions[model_name])),
            }
        elif step == S.DEPLOYING:
            changes = {
                "endpoint": EndpointRef(
                    name=endpoint, deployment=deployment_name_for(run_id), scoring_uri=f"https://{endpoint}.fake/score"
                )
            }
        elif step == S.DEPLOYED:
            changes = {"smoke_test": SmokeTestResult(passed=True, seconds=rng.uniform(0.5, 4), answer="Hello! How")}
        elif step == S.FAILED:
            changes = {"error": RunError(code="job_failed", message="the job failed: CUDA out of memory")}
        elif step == S.CANCELED:
            changes = {"error": RunError(code="job_canceled", message="canceled on request")}
        elif step == S.ROLLED_BACK:
            changes = {"smoke_test": SmokeTestResult(passed=False, seconds=30.0, error="no answer within 30 s")}
        record = advance(record, step, f"bench: {step}", at, **changes)
    return record


def write_fleet(store: BlobStore, fleet: Fleet, workers: int) -> None:
    """The record blobs, as the ledger encodes them, in a thread pool (no markers: `rebuild_index` writes them)."""

    def put(record: RunRecord) -> None:
        body = orjson.dumps(record.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2)
        store.write(RUNS, f"{RECORDS}{record.run_id}.json", body, content_type="application/json")

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(put, fleet.records):
            pass


def stage_engine(engine: FakeEngine, fleet: Fleet, ctx: AppContext, now: datetime) -> None:
    """Jobs for the runs with one under way; live endpoints, used a minute ago, for the deployed runs."""
    for record in fleet.records:
        if record.state in (S.SUBMITTED, S.RUNNING) and record.job_name:
            status = JobStatus.QUEUED if record.state == S.SUBMITTED else JobStatus.RUNNING
            engine.jobs[record.job_name] = JobInfo(name=record.job_name, status=status, created_at=record.updated_at)
        if record.state == S.DEPLOYED and record.endpoint:
            name = record.endpoint.name
            engine.endpoints[name] = EndpointInfo(
                name=name,
                scoring_uri=record.endpoint.scoring_uri,
                tags={MANAGED_TAG: "true"},
                created_at=now - timedelta(days=30),
                traffic={record.endpoint.deployment: 100},
                last_request_at=now - timedelta(minutes=1),
                request_count=1234,
            )
            engine.deployments[name] = {}
    # and one endpoint the app does not manage (never touched by the sweep)
    engine.endpoints["someone-elses"] = EndpointInfo(
        name="someone-elses", scoring_uri=None, tags={}, created_at=now - timedelta(days=90), traffic={}
    )


# -- measuring ----------------------------------------------------------------------------------------------------


class CpuClock:
    """Wall time, this process's CPU, Azurite's CPU and what the other processes used meanwhile."""

    def __init__(self, azurite: Azurite) -> None:
        self._azurite = psutil.Process(azurite.process.pid)

    def now(self) -> tuple[float, float, float, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        az = self._azurite.cpu_times()
        total = psutil.cpu_times()
        busy = sum(getattr(total, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
        return time.perf_counter(), own.ru_utime + own.ru_stime, az.user + az.system, busy

    @staticmethod
    def since(start: tuple[float, float, float, float], end: tuple[float, float, float, float]) -> dict[str, float]:
        wall, own, az, busy = (b - a for a, b in zip(start, end, strict=True))
        return {
            "seconds": wall,
            "own_cpu_s": own,
            "azurite_cpu_s": az,
            "other_cpu_share": max(0.0, busy - own - az) / wall if wall > 0 else 0.0,
        }


def make_context(settings: Settings, store: CountingStore, engine: FakeEngine, mode: str, keep_drop: bool) -> Any:
    ledger: CountingLedger
    if mode == "indexed":
        ledger = CountingLedger(store, RUNS)
    else:
        ledger = FullScanLedger(store, RUNS, keep_drop_stale=keep_drop)
    ctx = AppContext(settings=settings, store=store, ledger=ledger, engine_factory=lambda: engine)
    return ctx, ledger


def measure(
    settings: Settings, store: CountingStore, engine: FakeEngine, clock: CpuClock, mode: str, keep_drop: bool
) -> tuple[dict[str, Any], SweepOutcome]:
    ctx, ledger = make_context(settings, store, engine, mode, keep_drop)
    before, start = store.snapshot(), clock.now()
    outcome = sweep(ctx)
    timing, after = clock.since(start, clock.now()), store.snapshot()
    after.subtract(before)
    counts = {f"{op} {where}": n for (op, where), n in sorted(after.items()) if n}
    result = {
        **timing,
        "blob_reads": reads_of(after),
        "record_reads": after[("read", RUNS)],
        "runs_container_reads": reads_of(after, RUNS),
        "writes_and_deletes": writes_of(after),
        "names_listed": sum(n for (op, _), n in after.items() if op == "names_listed"),
        "calls": counts,
        "listings": [asdict(call) for call in ledger.calls],
        "drop_stale_deletes_avoided": getattr(ledger.index, "would_delete", 0),
    }
    return result, outcome


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(rounds, key=lambda r: r["seconds"])
    return {
        **best,
        "median_seconds": statistics.median(r["seconds"] for r in rounds),
        "all_seconds": [r["seconds"] for r in rounds],
        "reads_per_round": sorted({r["blob_reads"] for r in rounds}),
    }


def listing_table(fleet: Fleet, indexed: dict[str, Any], full: dict[str, Any]) -> list[dict[str, Any]]:
    """Per listing of the sweep: how many runs are in the states it asks for, and what each mode read for it."""
    rows = []
    for mine, theirs in zip(indexed["listings"], full["listings"], strict=False):
        wanted = mine["filters"].split(", ")[0]
        in_states = sum(fleet.by_state[s] for s in wanted.split("+")) if wanted != "all" else len(fleet.records)
        rows.append(
            {
                "filters": mine["filters"],
                "runs_in_states": in_states,
                "indexed_record_reads": mine["blob_reads"],
                "indexed_other_reads": mine["other_reads"],
                "full_scan_record_reads": theirs["blob_reads"],
                "full_scan_other_reads": theirs["other_reads"],
            }
        )
    return rows


def targets(indexed: dict[str, Any], full: dict[str, Any], listings: list[dict[str, Any]]) -> list[tuple]:
    ratio = full["blob_reads"] / max(1, indexed["blob_reads"])
    only_needed = all(row["indexed_record_reads"] == row["runs_in_states"] for row in listings)
    return [
        ("blob reads, full scan / indexed", f"{ratio:.0f}x", f">= {MIN_READ_RATIO:.0f}x", ratio >= MIN_READ_RATIO),
        (
            "indexed listings read only the runs in the states they list (O(active runs))",
            "yes" if only_needed else "no",
            "yes",
            only_needed,
        ),
        (
            "neither sweep wrote or deleted a blob",
            f"{indexed['writes_and_deletes']} / {full['writes_and_deletes']}",
            "0 / 0",
            indexed["writes_and_deletes"] == 0 and full["writes_and_deletes"] == 0,
        ),
    ]


# -- the report ---------------------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    config, fleet, setup = report["config"], report["fleet"], report["setup"]
    indexed, full = report["indexed"], report["full_scan"]
    ratios = report["ratios"]
    by_state = fleet["by_state"]
    active = sum(n for state, n in by_state.items() if state in ACTIVE_STATES)
    active_mix = ", ".join(f"{state} {by_state.get(state, 0)}" for state in ACTIVE_MIX)
    terminal_mix = ", ".join(
        f"{state} {n}" for state, n in sorted(by_state.items()) if state not in ACTIVE_STATES and state != "deployed"
    )
    busiest = max(indexed["other_cpu_share"], full["other_cpu_share"], setup["rebuild"]["other_cpu_share"])
    lines = [
        "# Run ledger benchmark: the sweep with the index and with a full scan",
        "",
        f"- When: {report['when']}",
        f"- Machine: {report['machine']}",
        f"- Ledger: {config['records']:,} run records over {config['lines']} lines in one runs container of a real "
        f"Azurite; {active} active ({active_mix}), {by_state.get('deployed', 0)} deployed on live endpoints, "
        f"the rest terminal ({terminal_mix})",
        f"- Records: {fleet['mean_record_bytes']:,} bytes on average (the ledger's encoding); no kept copies, "
        "no receipts",
        f"- Rounds: indexed {len(indexed['all_seconds'])}, full scan {len(full['all_seconds'])}, alternating; "
        "times are the fastest round (median beside it)",
        f"- Other processes used up to {busiest:.0%} of one CPU during the timed phases (shared machine: "
        f"{os.cpu_count()} CPUs, load average {report['load_average']})",
    ]
    if busiest > BUSY_SHARE:
        lines.append(
            "- **The machine was not quiet: the times are less reliable than usual; the read counts are not.**"
        )
    lines += [
        "",
        "| sweep | seconds (best) | seconds (median) | blob reads | record reads | list calls | names listed | "
        "writes+deletes | CPU s (this process / Azurite) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in (("indexed", indexed), ("full scan", full)):
        list_calls = sum(n for key, n in result["calls"].items() if key.startswith("list_names "))
        lines.append(
            f"| {name} | {result['seconds']:.3f} | {result['median_seconds']:.3f} | {result['blob_reads']:,} | "
            f"{result['record_reads']:,} | {list_calls} | {result['names_listed']:,} | "
            f"{result['writes_and_deletes']} | {result['own_cpu_s']:.2f} / {result['azurite_cpu_s']:.2f} |"
        )
    lines.append(
        f"| **full scan / indexed** | **{ratios['seconds']:.0f}x** | {ratios['median_seconds']:.0f}x | "
        f"**{ratios['blob_reads']:.0f}x** | {ratios['record_reads']:.0f}x | | | | |"
    )
    lines += [
        "",
        "Setup (not part of the comparison):",
        "",
        "| step | seconds | blob reads | writes |",
        "|---|---:|---:|---:|",
        f"| write {config['records']:,} records ({config['writers']} threads) | {setup['write']['seconds']:.1f} | "
        f"| {setup['write']['writes']:,} |",
        f"| `RunLedger.rebuild_index()` ({setup['rebuild']['indexed']:,} records, markers from none) | "
        f"{setup['rebuild']['seconds']:.1f} | {setup['rebuild']['blob_reads']:,} | {setup['rebuild']['writes']:,} |",
        "",
        "Per listing of the sweep (first round of each mode):",
        "",
        "| listing (states) | runs in those states | indexed: record reads (+ info/list) | full scan: record reads "
        "(+ list) |",
        "|---|---:|---:|---:|",
    ]
    for row in report["listings"]:
        lines.append(
            f"| {row['filters']} | {row['runs_in_states']} | {row['indexed_record_reads']} "
            f"(+{row['indexed_other_reads']}) | {row['full_scan_record_reads']:,} (+{row['full_scan_other_reads']}) |"
        )
    extra = indexed["record_reads"] - sum(row["indexed_record_reads"] for row in report["listings"])
    lines += [
        "",
        f"Outside the listings the indexed sweep read {extra} records (reconcile re-reads each running run twice) "
        f"and {indexed['calls'].get(f'read {DATASETS}', 0)} line.json blobs (the teardown, one per live endpoint): "
        "the same in both modes.",
    ]
    if full["drop_stale_deletes_avoided"]:
        lines.append(
            f"With the index off, the ledger's listings would also have sent {full['drop_stale_deletes_avoided']:,} "
            "deletes (drop_stale for every record outside the wanted states); they were not sent (see the docstring)."
        )
    lines += ["", "| target | measured | goal | result |", "|---|---:|---:|---|"]
    for target, measured, goal, met in report["targets"]:
        lines.append(f"| {target} | {measured} | {goal} | {'PASS' if met else 'FAIL'} |")
    lines += [
        "",
        "All rounds (seconds): "
        f"indexed {', '.join(f'{s:.3f}' for s in indexed['all_seconds'])}; "
        f"full scan {', '.join(f'{s:.2f}' for s in full['all_seconds'])}",
        f"Same outcome in both modes: {'yes' if report['same_outcome'] else 'NO'} "
        f"({report['outcome']['reconciled']} runs reconciled, {report['outcome']['torn_down']} torn down)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000, help="run records in the ledger (default 10,000)")
    parser.add_argument("--lines", type=int, default=50, help="model lines, the default line among them (default 50)")
    parser.add_argument("--active-share", type=float, default=0.01, help="share of active runs (default 0.01)")
    parser.add_argument("--endpoints", type=int, default=5, help="lines with a live endpoint (default 5)")
    parser.add_argument("--torn-down", type=int, default=20, help="torn-down runs (default 20)")
    parser.add_argument("--indexed-rounds", type=int, default=5, help="rounds of the indexed sweep (default 5)")
    parser.add_argument("--full-rounds", type=int, default=1, help="rounds of the full-scan sweep (default 1)")
    parser.add_argument("--writers", type=int, default=8, help="threads writing the records (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-drop-stale", action="store_true", help="let the full scan send drop_stale's deletes")
    args = parser.parse_args(argv)
    if args.lines < 1 or args.endpoints > args.lines or args.indexed_rounds < 1 or args.full_rounds < 1:
        parser.error("need --lines >= 1, --endpoints <= --lines and at least one round of each")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # "pool is full" while the writers run

    started = time.perf_counter()
    location = Path(tempfile.mkdtemp(prefix="bench-ledger-azurite-"))
    azurite = start_azurite(location)
    try:
        settings = Settings(
            storage_connection_string=azurite.connection_string,
            runs_container=RUNS,
            datasets_container=DATASETS,
            local_state_dir=location / "state",
            reconcile_after_minutes=10**7,  # resumable runs are looked at, not resumed (see the docstring)
            idle_sweep_schedule="0 0 0 1 1 *",
        )
        store = CountingStore.from_settings(settings)
        assert isinstance(store, CountingStore)
        store.ensure_container(RUNS)
        store.ensure_container(DATASETS)
        engine = FakeEngine()
        clock = CpuClock(azurite)
        now = datetime.now(UTC)
        ctx, _ = make_context(settings, store, engine, "indexed", False)

        fleet = build_fleet(ctx, args, now)
        for k, line in enumerate(fleet.lines):
            body = line_json(line, k).model_dump_json(exclude_defaults=True).encode()
            store.write(DATASETS, line_config_blob(line), body, content_type="application/json")
        stage_engine(engine, fleet, ctx, now)
        sizes = [
            len(orjson.dumps(r.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2))
            for r in fleet.records[:: max(1, len(fleet.records) // 500)]
        ]
        mix = ", ".join(f"{state} {n}" for state, n in sorted(fleet.by_state.items()))
        print(f"fleet: {len(fleet.records):,} records: {mix}", flush=True)

        start, before = clock.now(), store.snapshot()
        write_fleet(store, fleet, args.writers)
        written = clock.since(start, clock.now())
        after = store.snapshot()
        after.subtract(before)
        written["writes"] = writes_of(after)
        print(f"written in {written['seconds']:.1f} s", flush=True)

        rebuilder = RunLedger(store, RUNS)
        start, before = clock.now(), store.snapshot()
        indexed_count = rebuilder.rebuild_index()
        rebuild = clock.since(start, clock.now())
        after = store.snapshot()
        after.subtract(before)
        rebuild.update(indexed=indexed_count, blob_reads=reads_of(after), writes=writes_of(after))
        print(f"rebuild_index: {indexed_count:,} records in {rebuild['seconds']:.1f} s", flush=True)
        sample = fleet.records[len(fleet.records) // 2]
        assert rebuilder.get(sample.run_id) == sample, "a written record does not read back as it was built"

        runs: dict[str, list[dict[str, Any]]] = {"indexed": [], "full_scan": []}
        outcomes: dict[str, list[SweepOutcome]] = {"indexed": [], "full_scan": []}
        plan = ["indexed"] * args.indexed_rounds
        for k in range(args.full_rounds):  # spread the full scans among the indexed rounds
            plan.insert(min(len(plan), 1 + 2 * k), "full_scan")
        for k, mode in enumerate(plan, 1):
            result, outcome = measure(settings, store, engine, clock, mode, args.keep_drop_stale)
            runs[mode].append(result)
            outcomes[mode].append(outcome)
            print(
                f"round {k}/{len(plan)} {mode:9s} {result['seconds']:8.3f} s  {result['blob_reads']:6,} blob reads  "
                f"{result['writes_and_deletes']} writes",
                flush=True,
            )
        indexed, full = summarize(runs["indexed"]), summarize(runs["full_scan"])
        indexed["listings"], full["listings"] = runs["indexed"][0]["listings"], runs["full_scan"][0]["listings"]
        listings = listing_table(fleet, indexed, full)
        reference = outcomes["indexed"][0]
        same = all(o == reference for mode in outcomes for o in outcomes[mode])
        report: dict[str, Any] = {
            "benchmark": "ledger-sweep",
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}",
            "load_average": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "config": {**vars(args)},
            "fleet": {
                "by_state": dict(sorted(fleet.by_state.items())),
                "live_endpoints": len(fleet.live_lines),
                "mean_record_bytes": round(statistics.mean(sizes)),
            },
            "setup": {"write": written, "rebuild": rebuild},
            "indexed": indexed,
            "full_scan": full,
            "ratios": {
                "seconds": full["seconds"] / indexed["seconds"],
                "median_seconds": full["median_seconds"] / indexed["median_seconds"],
                "blob_reads": full["blob_reads"] / max(1, indexed["blob_reads"]),
                "record_reads": full["record_reads"] / max(1, indexed["record_reads"]),
            },
            "listings": listings,
            "same_outcome": same,
            "outcome": {"reconciled": len(reference.reconciled), "torn_down": len(reference.torn_down)},
            "total_seconds": time.perf_counter() - started,
        }
        report["targets"] = targets(indexed, full, listings)
    finally:
        azurite.stop()
        shutil.rmtree(location, ignore_errors=True)

    text = render(report)
    STATE.mkdir(parents=True, exist_ok=True)
    RESULTS_MD.write_text(text)
    RESULTS_JSON.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(text)
    print(f"(written to {RESULTS_MD} and {RESULTS_JSON}; {report['total_seconds']:.0f} s in all)")
    return 0 if same and all(met for *_, met in report["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
