"""A local fine-tuning job's folder: the contract between the engine (caller) and the training process.

    <state>/jobs/<name>/
      job.json         TrainingJob: what to train (written once by the engine; mode 0600, it may hold a webhook key)
      status.json      JobState: queued -> running -> completed | failed | canceled, with the worker's pid
      progress.json    Progress: step / max_steps / epoch / latest loss, rewritten as training goes
      metrics.json     JobMetricsFile: base and final evaluation, loss curve, throughput
      job.log          human-readable log, appended by both sides
      data/            train.jsonl, test.jsonl (copied from the app's storage by the engine)
      model/           the merged fine-tuned model (a Hugging Face folder)
      loss_curve.png, report.md

Every JSON file is replaced atomically (write a temp file, then rename), so a reader never sees half a file,
and everything survives a restart of the caller.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.adapters.files import write_atomically
from shared.domain.finetune import FineTuneParameters
from shared.domain.jobs import JobStatus

ModelT = TypeVar("ModelT", bound=BaseModel)


class TrainingJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # the app's run id
    base_model: str  # LOCAL_BASE_MODEL value: tiny | smollm2-135m-instruct | folder | hub id
    champion: str | None = None  # "name:version" of the line's champion, evaluated on the test split too
    champion_model_dir: str | None = None  # its merged weights
    parameters: FineTuneParameters
    tags: dict[str, str] = Field(default_factory=dict)
    state_dir: str  # the engine's state folder (base-model cache, MLflow database)
    experiment_name: str = "ft-autopilot"
    event_topic: str
    webhook_url: str | None = None  # Event Grid-shaped events are POSTed here on every status change


class JobError(BaseModel):
    code: str
    message: str


class JobState(BaseModel):
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None
    error: JobError | None = None


class Progress(BaseModel):
    step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    updated_at: datetime | None = None


class EvalMetrics(BaseModel):
    eval_loss: float
    perplexity: float
    mean_token_accuracy: float | None = None


class JobMetricsFile(BaseModel):
    base: EvalMetrics | None = None
    champion: EvalMetrics | None = None  # the line's champion on the same test split
    champion_model: str | None = None  # "name:version"
    final: EvalMetrics | None = None
    train_loss: float | None = None
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)
    eval_curve: list[tuple[int, float]] = Field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0
    tokens_per_second: float = 0.0
    device: str = "cpu"
    notes: list[str] = Field(default_factory=list)
    mlflow_run_id: str | None = None
    mlflow_model_uri: str | None = None  # the merged model logged to MLflow (models:/m-...), what gets registered


class JobFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def name(self) -> str:
        return self.root.name

    job_json = property(lambda self: self.root / "job.json")
    status_json = property(lambda self: self.root / "status.json")
    progress_json = property(lambda self: self.root / "progress.json")
    metrics_json = property(lambda self: self.root / "metrics.json")
    log_path = property(lambda self: self.root / "job.log")
    data_dir = property(lambda self: self.root / "data")
    train_file = property(lambda self: self.root / "data" / "train.jsonl")
    test_file = property(lambda self: self.root / "data" / "test.jsonl")
    model_dir = property(lambda self: self.root / "model")
    launcher_pid = property(lambda self: self.root / "launcher.pid")  # the spawned process, before it reports
    loss_curve_png = property(lambda self: self.root / "loss_curve.png")
    report_md = property(lambda self: self.root / "report.md")

    def exists(self) -> bool:
        return self.job_json.exists()

    def read_job(self) -> TrainingJob:
        return TrainingJob.model_validate_json(self.job_json.read_bytes())

    def write_job(self, job: TrainingJob) -> None:
        write_atomically(self.job_json, job.model_dump_json(indent=2).encode(), mode=0o600)

    def read_state(self) -> JobState | None:
        return _read(self.status_json, JobState)

    def write_state(self, state: JobState) -> None:
        write_atomically(self.status_json, state.model_dump_json(indent=2).encode())

    def read_progress(self) -> Progress | None:
        return _read(self.progress_json, Progress)

    def write_progress(self, progress: Progress) -> None:
        write_atomically(self.progress_json, progress.model_dump_json().encode())

    def read_metrics(self) -> JobMetricsFile | None:
        return _read(self.metrics_json, JobMetricsFile)

    def write_metrics(self, metrics: JobMetricsFile) -> None:
        write_atomically(self.metrics_json, metrics.model_dump_json(indent=2).encode())

    def log(self, message: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{stamp} {message}\n")


def _read(path: Path, model: type[ModelT]) -> ModelT | None:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
