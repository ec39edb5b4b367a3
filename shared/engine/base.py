"""The Engine port: what the lifecycle needs from a training-and-serving backend.

Two adapters implement it: Azure ML (jobs of the `chat_completion_pipeline` component, the model
registry, managed online endpoints) and the local engine (TRL/peft training, an MLflow registry, a
loopback endpoint server). Operations are named after the nouns they act on. Every create is
idempotent: called again with the same name, it returns what exists instead of making a second one.
`create_deployment` may return before the deployment is ready (Azure ML provisions for ten minutes or more):
callers follow it with `get_deployment` until it `is_ready` or `has_failed`.
Adapters raise shared.domain.errors.EngineError (transient) or a permanent subclass, never SDK errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from shared.domain.finetune import FineTuneParameters
from shared.domain.jobs import JobStatus
from shared.domain.tags import MANAGED_TAG


@dataclass(frozen=True)
class TrainingData:
    """The prepared splits, as blobs in the app's storage; each engine resolves them to what it reads."""

    container: str
    train_blob: str
    test_blob: str


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSpec:
    run_id: str
    base_model: str
    parameters: FineTuneParameters
    data: TrainingData
    tags: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 0  # 0: the run's first job; n: its n-th resubmission after a transient failure
    # the line's champion when the job was submitted: an engine that can also evaluate it on the test split (the
    # local one) reports its loss there, so the gate compares losses on the same conversations
    champion: ModelRef | None = None

    @property
    def job_name(self) -> str:
        """The run id, with `-r<n>` for a resubmission: the name makes each submission idempotent."""
        return self.run_id if self.attempt == 0 else f"{self.run_id}-r{self.attempt}"


@dataclass(frozen=True)
class JobProgress:
    step: int
    total_steps: int
    loss: float | None = None


@dataclass(frozen=True)
class JobWarning:
    code: str
    message: str


@dataclass(frozen=True)
class JobInfo:
    name: str
    status: JobStatus
    created_at: datetime | None = None
    error: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    progress: JobProgress | None = None  # when the engine reports it
    # a failure worth submitting again (a lost worker, a preempted node, a system error), not the job's own fault
    failure_transient: bool = False
    warnings: tuple[JobWarning, ...] = ()  # what the engine changed or left out of the spec at submission


@dataclass(frozen=True)
class JobMetrics:
    """Losses as the engine logged them; `base_eval_loss` is the base model's loss on the same test split, and
    `champion_eval_loss` the loss of `champion` ("name:version", the spec's champion) there, where the engine
    evaluates them."""

    train_loss: float | None
    eval_loss: float | None
    base_eval_loss: float | None = None
    champion_eval_loss: float | None = None
    champion: str | None = None
    perplexity: float | None = None
    mean_token_accuracy: float | None = None
    loss_curve: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class DeploymentInfo:
    name: str
    endpoint_name: str
    model: ModelRef
    state: str  # Azure ML's provisioning states: Creating, Updating, Succeeded, Failed, Canceled, Deleting

    @property
    def is_ready(self) -> bool:
        return self.state.lower() == "succeeded"

    @property
    def has_failed(self) -> bool:
        return self.state.lower() in ("failed", "canceled")


@dataclass(frozen=True)
class EndpointInfo:
    name: str
    scoring_uri: str | None
    tags: Mapping[str, str]
    created_at: datetime | None
    traffic: Mapping[str, int]
    last_request_at: datetime | None = None
    request_count: int = 0

    @property
    def is_managed(self) -> bool:
        return self.tags.get(MANAGED_TAG) == "true"


@dataclass(frozen=True)
class EndpointKeys:
    primary: str = field(repr=False)
    secondary: str = field(repr=False)


@dataclass(frozen=True)
class ScoringRequest:
    """A scoring request to an endpoint: its body (shared.domain.scoring's contract), pinned to `deployment_name` if
    given, waited for `timeout_s` seconds (None: the adapter's default)."""

    endpoint_name: str
    body: Mapping[str, Any]
    deployment_name: str | None = None
    timeout_s: float | None = None


@runtime_checkable
class Engine(Protocol):
    name: str

    # jobs
    def submit_job(self, spec: JobSpec) -> JobInfo: ...
    def get_job(self, name: str) -> JobInfo: ...
    def cancel_job(self, name: str) -> JobInfo: ...
    def job_metrics(self, name: str) -> JobMetrics: ...

    # models
    def register_model(self, job_name: str, model_name: str, tags: Mapping[str, str]) -> ModelRef: ...
    def get_model(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None: ...
    def set_model_alias(self, model: ModelRef, alias: str) -> None: ...

    # endpoints and deployments
    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo: ...
    def create_deployment(self, endpoint_name: str, deployment_name: str, model: ModelRef) -> DeploymentInfo: ...
    def create_base_model_deployment(self, endpoint_name: str, deployment_name: str, base_model: str) -> DeploymentInfo:
        """A deployment of the base model itself, at 0% traffic, for an evaluation to compare with (engines whose
        profile `serves_base_model`; the others raise a permanent EngineError)."""

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None: ...
    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str: ...
    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo: ...
    def get_keys(self, endpoint_name: str) -> EndpointKeys: ...
    def invoke(self, request: ScoringRequest) -> Any:
        """POST the request's body to its endpoint. No answer within its `timeout_s` raises
        EngineError(code="scoring_timeout"), transient."""

    def list_endpoints(self) -> list[EndpointInfo]: ...
    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None: ...
    def delete_endpoint(self, name: str) -> None: ...
