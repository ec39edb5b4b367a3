"""The run record and its state machine. Pure: no I/O, time is passed in.

A run is one fine-tuning of one dataset content with one set of parameters on one base model;
its id is derived from those, so the same upload delivered twice is the same run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.errors import InvalidTransition
from shared.domain.evaluation.evidence import EvaluationSummary
from shared.domain.finetune import FineTuneParameters
from shared.domain.lines import DEFAULT_LINE, EffectiveLineConfig
from shared.domain.pricing import RunEstimate

RUN_ID_PATTERN = re.compile(r"^ft-[0-9a-f]{12}$")


class RunState(StrEnum):
    RECEIVED = "received"
    VALIDATING = "validating"
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    RUNNING = "running"
    FAILED = "failed"
    CANCELED = "canceled"
    TRAINED = "trained"
    GATED_OUT = "gated_out"
    REGISTERED = "registered"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"
    TORN_DOWN = "torn_down"


S = RunState
NEXT_STATES: dict[RunState, frozenset[RunState]] = {
    S.RECEIVED: frozenset({S.VALIDATING}),
    # validating -> failed: the dataset is fine but no engine can take the job (a permanent error)
    S.VALIDATING: frozenset({S.REJECTED, S.SUBMITTED, S.FAILED}),
    # job events are unordered and may skip Running; -> submitted: the job failed for a transient cause and
    # another job of the run was submitted (JobRetry)
    S.SUBMITTED: frozenset({S.RUNNING, S.TRAINED, S.FAILED, S.CANCELED, S.SUBMITTED}),
    S.RUNNING: frozenset({S.TRAINED, S.FAILED, S.CANCELED, S.SUBMITTED}),
    S.TRAINED: frozenset({S.GATED_OUT, S.REGISTERED, S.FAILED}),
    S.REGISTERED: frozenset({S.DEPLOYING, S.FAILED}),
    # deploying -> superseded: a newer run became champion meanwhile and this one does not beat it
    S.DEPLOYING: frozenset({S.DEPLOYED, S.ROLLED_BACK, S.SUPERSEDED, S.FAILED}),
    # deployed -> superseded: a later shift on the endpoint retired this run's deployment
    S.DEPLOYED: frozenset({S.TORN_DOWN, S.SUPERSEDED}),
    S.TORN_DOWN: frozenset({S.DEPLOYING}),  # restore
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.GATED_OUT: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.SUPERSEDED: frozenset(),
}
TERMINAL_STATES = frozenset(state for state, following in NEXT_STATES.items() if not following)


class Frozen(BaseModel):
    """The record's parts are values: changed by copying (`model_copy`), never in place."""

    model_config = ConfigDict(frozen=True)


class Transition(Frozen):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    at: datetime
    from_state: RunState | None = Field(alias="from")
    to_state: RunState = Field(alias="to")
    reason: str


class Attempt(Frozen):
    """A try of one engine operation that failed in a way worth retrying (the platform retried, or will).

    `operation` names the call within its stage (create_deployment, get_deployment ...); records written before
    operations were named have "". `resolved_at` is set when that operation next succeeded: from then on the failure
    is history and no longer counts against the operation's tries."""

    at: datetime
    stage: str
    code: str
    message: str
    operation: str = ""
    resolved_at: datetime | None = None

    def counts_against(self, stage: str, operation: str) -> bool:
        """An unresolved failure of this operation: one of its tries since it last succeeded."""
        return self.resolved_at is None and self.stage == stage and self.operation == operation


class RunError(Frozen):
    code: str
    message: str


class RunWarning(Frozen):
    """Something the run went on with that its owner should know (e.g. base-model defaults left out)."""

    code: str
    message: str


class DatasetRef(Frozen):
    container: str
    blob: str
    sha256: str
    size_bytes: int
    etag: str | None = None
    uploaded_at: datetime | None = None  # the blob's last-modified time when it was taken in


class RunArtifacts(Frozen):
    """Where a run's outputs live, as `container/path` blob names."""

    report_json: str | None = None
    report_md: str | None = None
    train: str | None = None
    test: str | None = None
    loss_curve: str | None = None  # SVG, written after training
    training_report: str | None = None  # Markdown summary of the metrics review
    evaluation_json: str | None = None  # the evidence of the evaluation at 0% traffic
    evaluation_md: str | None = None


class ValidationSummary(Frozen):
    valid: bool
    rows: int
    train_rows: int
    test_rows: int
    error_counts: dict[str, int]
    warning_counts: dict[str, int]


class RunMetrics(Frozen):
    """The job's metrics as reviewed after training; losses on the prepared test split."""

    train_loss: float | None = None
    eval_loss: float | None = None
    base_eval_loss: float | None = None
    champion_eval_loss: float | None = None  # the champion's, on the same split (engines that evaluate it)
    champion: str | None = None  # "name:version" of that champion
    perplexity: float | None = None
    mean_token_accuracy: float | None = None


class GateResult(Frozen):
    passed: bool
    reasons: list[str]
    champion: str | None = None  # "name:version" compared against, if any
    champion_eval_loss: float | None = None


class ModelVersion(Frozen):
    name: str
    version: str


class EndpointRef(Frozen):
    """Where the run's model is (or was) served. Never a key: clients ask the engine for those."""

    name: str
    deployment: str
    scoring_uri: str | None = None
    previous_deployment: str | None = None


class SmokeTestResult(Frozen):
    passed: bool
    seconds: float
    answer: str | None = None  # the first characters of the answer
    error: str | None = None


class UploadUsed(Frozen):
    """One upload an accumulating line's run trained on, and how many rows it gave (after deduplication)."""

    blob: str  # container/name
    rows: int


class JobRetry(Frozen):
    """A job that failed for a transient cause and was submitted again, on the same run."""

    at: datetime
    job_name: str  # the attempt that failed
    cause: str


class RunRecord(Frozen):
    run_id: str
    state: RunState
    created_at: datetime
    updated_at: datetime
    engine: str
    base_model: str
    parameters: FineTuneParameters
    dataset: DatasetRef
    line: str = DEFAULT_LINE  # records from before lines belong to the default line
    line_config: EffectiveLineConfig | None = None
    line_config_sha256: str | None = None
    uploads: list[UploadUsed] = Field(default_factory=list, description="accumulating lines: what it trained on")
    job_retries: list[JobRetry] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list, description="every container/blob that delivered this content")
    validation: ValidationSummary | None = None
    cost_estimate: RunEstimate | None = None  # before submission; what it cost is worked out from `history`
    artifacts: RunArtifacts = Field(default_factory=RunArtifacts)
    job_name: str | None = None
    metrics: RunMetrics | None = None
    gate: GateResult | None = None
    model: ModelVersion | None = None
    endpoint: EndpointRef | None = None
    smoke_test: SmokeTestResult | None = None
    evaluation: EvaluationSummary | None = None
    error: RunError | None = None
    warnings: list[RunWarning] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    history: list[Transition] = Field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def order(self) -> tuple[datetime, str]:
        """Which of two runs is newer: the upload's time (the record's, for runs from before it was kept), then the
        run id. Promotion goes by this, never by which run happened to register or finish first."""
        return (self.dataset.uploaded_at or self.created_at, self.run_id)


def run_id_for(
    dataset_sha256: str, parameters: FineTuneParameters, base_model: str, salt: str = "", line: str = DEFAULT_LINE
) -> str:
    """Deterministic: the same content, parameters, base model and line are one run. A salt forces a new one. The
    default line adds nothing, so runs from before lines keep their ids."""
    digest = hashlib.sha256()
    parts = [dataset_sha256.encode(), parameters.canonical_json(), base_model.encode()]
    parts += [f"line:{line}".encode()] if line != DEFAULT_LINE else []
    for part in parts + ([salt.encode()] if salt else []):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two inputs share a byte stream
        digest.update(part)
    return "ft-" + digest.hexdigest()[:12]


def new_run(
    *,
    run_id: str,
    dataset: DatasetRef,
    parameters: FineTuneParameters,
    base_model: str,
    engine: str,
    now: datetime,
    line_config: EffectiveLineConfig | None = None,
) -> RunRecord:
    source = f"{dataset.container}/{dataset.blob}"
    return RunRecord(
        run_id=run_id,
        state=RunState.RECEIVED,
        created_at=now,
        updated_at=now,
        engine=engine,
        base_model=base_model,
        parameters=parameters,
        dataset=dataset,
        line=line_config.line if line_config else DEFAULT_LINE,
        line_config=line_config,
        line_config_sha256=line_config.sha256 if line_config else None,
        sources=[source],
        history=[Transition(at=now, from_state=None, to_state=RunState.RECEIVED, reason=f"dataset {source}")],
    )


def can_advance(record: RunRecord, to: RunState) -> bool:
    return to in NEXT_STATES[record.state]


def advance(record: RunRecord, to: RunState, reason: str, now: datetime, **changes: object) -> RunRecord:
    """Move the run to `to`, appending the transition to its history; `changes` set other fields too."""
    if not can_advance(record, to):
        raise InvalidTransition(f"run {record.run_id} cannot go from {record.state} to {to}")
    history = [*record.history, Transition(at=now, from_state=record.state, to_state=to, reason=reason)]
    return record.model_copy(update={**changes, "state": to, "updated_at": now, "history": history})


def add_attempt(
    record: RunRecord, *, stage: str, code: str, message: str, now: datetime, operation: str = ""
) -> RunRecord:
    attempt = Attempt(at=now, stage=stage, operation=operation, code=code, message=message)
    return record.model_copy(update={"attempts": [*record.attempts, attempt], "updated_at": now})


def failed_tries(record: RunRecord, *, stage: str, operation: str) -> int:
    """How many times in a row the operation has failed: its failures recorded since it last succeeded."""
    return sum(1 for attempt in record.attempts if attempt.counts_against(stage, operation))


def resolve_attempts(record: RunRecord, *, stage: str, operation: str, now: datetime) -> RunRecord | None:
    """The operation succeeded: mark its unresolved failures resolved (kept, as history). None when there are none,
    so a ledger update writes nothing."""
    if not failed_tries(record, stage=stage, operation=operation):
        return None
    attempts = [
        attempt.model_copy(update={"resolved_at": now}) if attempt.counts_against(stage, operation) else attempt
        for attempt in record.attempts
    ]
    return record.model_copy(update={"attempts": attempts, "updated_at": now})


def add_source(record: RunRecord, source: str, now: datetime) -> RunRecord:
    if source in record.sources:
        return record
    return record.model_copy(update={"sources": [*record.sources, source], "updated_at": now})


def advance_from(
    expected: RunState, to: RunState, reason: str, now: datetime, **changes: object
) -> Callable[[RunRecord], RunRecord | None]:
    """A ledger change that advances only a run still in `expected`: a duplicate or late delivery that finds
    the run moved on changes nothing."""

    def change(record: RunRecord) -> RunRecord | None:
        return advance(record, to, reason, now, **changes) if record.state == expected else None

    return change
