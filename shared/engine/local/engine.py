"""LocalEngine: the Engine port on one machine.

Jobs are training processes with a folder each (jobfiles.py), models live in an MLflow registry
(registry.py), endpoints are loopback router processes with deployment processes behind them
(endpoints.py). All state is in files under LOCAL_STATE_DIR, so a restarted caller finds everything again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.adapters.storage import BlobStore
from shared.domain.clock import utc_now
from shared.domain.errors import EngineError
from shared.domain.jobs import JobStatus
from shared.domain.tags import CHALLENGER
from shared.engine.base import (
    DeploymentInfo,
    EndpointInfo,
    EndpointKeys,
    JobInfo,
    JobMetrics,
    JobProgress,
    JobSpec,
    ModelRef,
    ScoringRequest,
)
from shared.engine.local.base_models import BaseModelUnavailable, resolve_base_model
from shared.engine.local.endpoints import LocalEndpoints
from shared.engine.local.events import EventCallback, EventDelivery, run_events
from shared.engine.local.jobfiles import JobError, JobFiles, JobState, TrainingJob
from shared.engine.local.processes import is_alive, start_process, stop_process
from shared.engine.local.registry import LocalRegistry
from shared.engine.local.training.launch import WORKER_MODULE, launch_command
from shared.engine.profile import LOCAL_WORKSPACE_TOPIC

logger = logging.getLogger(__name__)

# A queued job whose worker never reported in, or a running one whose process is gone, is dead after this.
LOST_WORKER_GRACE_S = 120
CANCEL_WAIT_S = 30


class JobNotFound(EngineError):
    code = "job_not_found"
    transient = False


class LocalEngine:
    name = "local"

    def __init__(
        self,
        state_dir: Path,
        store: BlobStore | None,
        *,
        base_model: str,
        webhook_url: str | None = None,
        event_callback: EventCallback | None = None,
        event_topic: str = LOCAL_WORKSPACE_TOPIC,
    ) -> None:
        self._state_dir = state_dir.resolve()
        self._jobs_dir = self._state_dir / "jobs"
        self._store = store
        self._base_model = base_model
        self._webhook_url = webhook_url
        self._event_topic = event_topic
        self._watcher = _StatusWatcher(EventDelivery(callback=event_callback)) if event_callback else None
        self._registry = LocalRegistry(self._state_dir)
        self._endpoints = LocalEndpoints(self._state_dir)

    # -- jobs ------------------------------------------------------------------------------------

    def submit_job(self, spec: JobSpec) -> JobInfo:
        files = self._files(spec.job_name)
        try:
            files.root.parent.mkdir(parents=True, exist_ok=True)
            files.root.mkdir()  # the claim: one submission per job name, even with concurrent callers
        except FileExistsError:
            logger.info("job %s exists already", spec.job_name, extra={"run_id": spec.run_id})
            return self._job_info(files)
        try:
            self._copy_training_data(spec, files)
            base_model = spec.base_model or self._base_model
            job = TrainingJob(
                name=spec.job_name,
                base_model=base_model,
                **self._champion_to_evaluate(spec.champion, base_model),
                parameters=spec.parameters,
                tags=dict(spec.tags),
                state_dir=str(self._state_dir),
                event_topic=self._event_topic,
                webhook_url=self._webhook_url,
            )
            files.write_job(job)
            now = utc_now()
            files.write_state(JobState(status=JobStatus.QUEUED, created_at=now, updated_at=now))
            files.log(f"submitted: base model {job.base_model}, {_count_lines(files.train_file)} training rows")
            pid = start_process(launch_command(files.root), log_path=files.root / "worker.out")
            files.launcher_pid.write_text(str(pid))  # status.json is the worker's to write from now on
        except BaseException:
            shutil.rmtree(files.root, ignore_errors=True)  # no half-made job: a retry submits afresh
            raise
        logger.info("job %s started (pid %s)", spec.job_name, pid, extra={"run_id": spec.run_id})
        self._watch(files)
        return self._job_info(files)

    def get_job(self, name: str) -> JobInfo:
        files = self._files(name)
        if not files.root.exists():
            raise JobNotFound(f"no local job {name}")
        return self._job_info(files)

    def cancel_job(self, name: str) -> JobInfo:
        files = self._files(name)
        state = files.read_state()
        if state is None:
            raise JobNotFound(f"no local job {name}")
        if not state.status.is_terminal:
            pid = _worker_pid(files, state)
            if pid and is_alive(pid, WORKER_MODULE):
                stop_process(pid, marker=WORKER_MODULE, timeout_s=CANCEL_WAIT_S)  # the worker records canceled
            state = files.read_state()
            if state is not None and not state.status.is_terminal:
                self._finish(files, state, JobStatus.CANCELED, None)
            files.log("canceled")
        return self._job_info(files)

    def job_metrics(self, name: str) -> JobMetrics:
        metrics = self._files(name).read_metrics()
        if metrics is None:
            raise EngineError(f"job {name} has no metrics yet", code="metrics_not_ready")
        return JobMetrics(
            train_loss=metrics.train_loss,
            eval_loss=metrics.final.eval_loss if metrics.final else None,
            base_eval_loss=metrics.base.eval_loss if metrics.base else None,
            champion_eval_loss=metrics.champion.eval_loss if metrics.champion else None,
            champion=metrics.champion_model if metrics.champion else None,
            perplexity=metrics.final.perplexity if metrics.final else None,
            mean_token_accuracy=metrics.final.mean_token_accuracy if metrics.final else None,
            loss_curve=tuple((int(step), float(loss)) for step, loss in metrics.loss_curve),
        )

    def job_folder(self, name: str) -> Path:
        """Where the job's log, report and loss curve are (local engine only)."""
        return self._files(name).root

    # -- models ----------------------------------------------------------------------------------

    def register_model(self, job_name: str, model_name: str, tags: Mapping[str, str]) -> ModelRef:
        files = self._files(job_name)
        metrics = files.read_metrics()
        state = files.read_state()
        if state is None or state.status != JobStatus.COMPLETED or metrics is None or not metrics.mlflow_model_uri:
            raise EngineError(f"job {job_name} has no trained model to register", code="model_not_ready")
        model = self._registry.register(metrics.mlflow_model_uri, model_name, {**tags, "job": job_name})
        self._registry.set_alias(model.name, model.version, CHALLENGER)
        return model

    def get_model(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None:
        return self._registry.get(name, version=version, alias=alias)

    def set_model_alias(self, model: ModelRef, alias: str) -> None:
        self._registry.set_alias(model.name, model.version, alias)

    # -- endpoints -------------------------------------------------------------------------------

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        return self._endpoints.create_or_update_endpoint(name, tags)

    def create_deployment(self, endpoint_name: str, deployment_name: str, model: ModelRef) -> DeploymentInfo:
        weights, tokenizer = self._registry.model_folders(model)
        return self._endpoints.create_deployment(endpoint_name, deployment_name, model, weights, tokenizer)

    def create_base_model_deployment(self, endpoint_name: str, deployment_name: str, base_model: str) -> DeploymentInfo:
        try:
            folder = Path(resolve_base_model(base_model, self._state_dir / "models"))
        except BaseModelUnavailable as exc:
            raise EngineError(str(exc), code=BaseModelUnavailable.code, transient=False) from exc
        model = ModelRef(name=base_model, version="base")
        return self._endpoints.create_deployment(endpoint_name, deployment_name, model, folder, folder)

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        return self._endpoints.get_deployment(endpoint_name, deployment_name)

    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str:
        return self._endpoints.deployment_logs(endpoint_name, deployment_name, lines)

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        return self._endpoints.set_traffic(endpoint_name, traffic)

    def get_keys(self, endpoint_name: str) -> EndpointKeys:
        return self._endpoints.get_keys(endpoint_name)

    def invoke(self, request: ScoringRequest) -> Any:
        return self._endpoints.invoke(
            request.endpoint_name, dict(request.body), request.deployment_name, timeout_s=request.timeout_s
        )

    def list_endpoints(self) -> list[EndpointInfo]:
        return self._endpoints.list_endpoints()

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        self._endpoints.delete_deployment(endpoint_name, deployment_name)

    def delete_endpoint(self, name: str) -> None:
        self._endpoints.delete_endpoint(name)

    # -- internals -------------------------------------------------------------------------------

    def _champion_to_evaluate(self, champion: ModelRef | None, base_model: str) -> dict[str, str]:
        """The champion's weights for the job to evaluate on its test split: only a champion fine-tuned from the
        same base model, whose tokenizer gives the same tokens (a line that moved base models compares no loss)."""
        if champion is None or champion.tags.get("base_model") != base_model:
            return {}
        weights, _ = self._registry.model_folders(champion)
        return {"champion": f"{champion.name}:{champion.version}", "champion_model_dir": str(weights)}

    def _files(self, name: str) -> JobFiles:
        if not name or "/" in name or name.startswith("."):
            raise EngineError(f"invalid job name {name!r}", code="invalid_job_name")
        return JobFiles(self._jobs_dir / name)

    def _copy_training_data(self, spec: JobSpec, files: JobFiles) -> None:
        if self._store is None:
            raise EngineError("the local engine needs the app's storage to read training data", code="no_storage")
        files.data_dir.mkdir(parents=True, exist_ok=True)
        for blob, target in ((spec.data.train_blob, files.train_file), (spec.data.test_blob, files.test_file)):
            partial = target.with_suffix(".partial")
            with open(partial, "wb") as out:
                for chunk in self._store.iter_chunks(spec.data.container, blob):
                    out.write(chunk)
            partial.replace(target)

    def _job_info(self, files: JobFiles) -> JobInfo:
        state = self._checked_state(files)
        job = files.read_job() if files.exists() else None
        if state is None:  # claimed by a concurrent submission that is still writing the folder
            return JobInfo(name=files.name, status=JobStatus.QUEUED, tags=job.tags if job else {})
        progress = files.read_progress()
        return JobInfo(
            name=files.name,
            status=state.status,
            created_at=state.created_at,
            error=f"{state.error.code}: {state.error.message}" if state.error else None,
            failure_transient=state.error is not None and state.error.code in TRANSIENT_JOB_ERRORS,
            tags=job.tags if job else {},
            progress=JobProgress(step=progress.step, total_steps=progress.max_steps, loss=progress.loss)
            if progress
            else None,
        )

    def _checked_state(self, files: JobFiles) -> JobState | None:
        """The recorded state, with a dead worker noticed: events can be lost, a crashed process says nothing."""
        state = files.read_state()
        if state is None or state.status.is_terminal:
            return state
        silent_for = time.time() - state.updated_at.timestamp()
        pid = _worker_pid(files, state)
        alive = pid is not None and is_alive(pid, WORKER_MODULE)
        if not alive and silent_for > (LOST_WORKER_GRACE_S if pid is None else 5):
            error = JobError(code="worker_lost", message="the training process exited without reporting a result")
            files.log(f"failed: {error.message}")
            return self._finish(files, state, JobStatus.FAILED, error)
        return state

    def _finish(self, files: JobFiles, state: JobState, status: JobStatus, error: JobError | None) -> JobState:
        now = utc_now()
        finished = state.model_copy(update={"status": status, "updated_at": now, "finished_at": now, "error": error})
        files.write_state(finished)
        job = files.read_job()
        delivery = EventDelivery(job.webhook_url)
        for event in run_events(
            job_name=job.name, status=status, tags=job.tags, experiment_name=job.experiment_name, topic=job.event_topic
        ):
            delivery.deliver(event)
        return finished

    def _watch(self, files: JobFiles) -> None:
        if self._watcher is not None:
            self._watcher.watch(files)


# A worker that was killed or died without writing its result: nothing about the job itself; a new one may succeed.
TRANSIENT_JOB_ERRORS = frozenset({"worker_lost"})


class _StatusWatcher:
    """Delivers in-process callback events: polls the folders of watched jobs and reports each status change."""

    def __init__(self, delivery: EventDelivery, interval_s: float = 0.5) -> None:
        self._delivery = delivery
        self._interval_s = interval_s
        self._seen: dict[Path, JobStatus | None] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, files: JobFiles) -> None:
        with self._lock:
            self._seen.setdefault(files.root, None)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="local-job-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                watched = list(self._seen.items())
            if not watched:
                return
            for root, seen in watched:
                files = JobFiles(root)
                state = files.read_state()
                if state is not None and state.status != seen:
                    job = files.read_job()
                    for event in run_events(
                        job_name=job.name,
                        status=state.status,
                        tags=job.tags,
                        experiment_name=job.experiment_name,
                        topic=job.event_topic,
                    ):
                        self._delivery.deliver(event)
                    with self._lock:
                        if state.status.is_terminal:
                            self._seen.pop(root, None)
                        else:
                            self._seen[root] = state.status
            time.sleep(self._interval_s)


def _worker_pid(files: JobFiles, state: JobState) -> int | None:
    """The worker's own pid once it reported; before that, the pid of the process the engine launched."""
    if state.pid:
        return state.pid
    try:
        return int(files.launcher_pid.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _count_lines(path: Path) -> int:
    with open(path, "rb") as file:
        return sum(1 for _ in file)
