"""The use cases. Handlers and the CLI call these; each decides, the adapters it is given touch the world."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from enum import StrEnum

from pydantic import ValidationError

from shared.api import CreateRunRequest
from shared.chatdata import (
    Split,
    ValidationOptions,
    ValidationReport,
    combine_train_test,
    render_markdown,
    validate_chunks,
)
from shared.context import AppContext
from shared.engine.base import RUN_TAG, JobSpec, TrainingData
from shared.errors import AutopilotError, InvalidInput, describe_validation_error
from shared.finetune import FineTuneParameters, parameters_for
from shared.runs import (
    RUN_ID_PATTERN,
    DatasetRef,
    RunArtifacts,
    RunError,
    RunRecord,
    RunState,
    RunWarning,
    ValidationSummary,
    add_attempt,
    add_source,
    advance_from,
    new_run,
    run_id_for,
)
from shared.settings import Settings
from shared.spool import SplitSpool

logger = logging.getLogger(__name__)

DATASET_SUFFIX = ".jsonl"
BODY_CHUNK_BYTES = 4 * 1024 * 1024


class IntakeStatus(StrEnum):
    IGNORED = "ignored"  # not a dataset (our own outputs, other file types)
    DUPLICATE = "duplicate"  # this content already is a run past intake
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    FAILED = "failed"  # valid, but no engine could take the job


@dataclass(frozen=True)
class IntakeOutcome:
    status: IntakeStatus
    run_id: str | None
    detail: str


def validation_options(
    settings: Settings, *, test_fraction: float | None = None, parameters: FineTuneParameters | None = None
) -> ValidationOptions:
    return ValidationOptions(
        test_fraction=settings.test_fraction if test_fraction is None else test_fraction,
        max_line_bytes=settings.max_line_bytes,
        max_listed_problems=settings.max_listed_problems,
        max_seq_length=(parameters or FineTuneParameters()).max_seq_length,
        max_invalid_fraction=settings.max_invalid_fraction,
    )


def validate_bytes(settings: Settings, body: bytes, *, test_fraction: float | None = None) -> ValidationReport:
    """Validate a dataset held in memory (an HTTP body); nothing is stored."""
    try:
        options = validation_options(settings, test_fraction=test_fraction)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    view = memoryview(body)
    chunks = (bytes(view[i : i + BODY_CHUNK_BYTES]) for i in range(0, len(view), BODY_CHUNK_BYTES))
    return validate_chunks(chunks, options)


def is_dataset_blob(settings: Settings, name: str) -> bool:
    return name.endswith(DATASET_SUFFIX) and not name.startswith(settings.prepared_prefix)


def intake_dataset(
    ctx: AppContext,
    container: str,
    name: str,
    *,
    parameters: FineTuneParameters | None = None,
    force: bool = False,
) -> IntakeOutcome:
    """An uploaded blob becomes exactly one run: validated, split, recorded and, when valid, submitted.

    Safe to call any number of times for the same blob, concurrently too. Invalid data is recorded and
    returned; transient storage or engine errors are raised (so the platform retries) after being noted
    on the run when there is one. `parameters` replace the defaults; `force` makes a new run even for
    content that was run before.
    """
    if not is_dataset_blob(ctx.settings, name):
        logger.info("ignoring %s/%s: not a %s dataset upload", container, name, DATASET_SUFFIX)
        return IntakeOutcome(IntakeStatus.IGNORED, None, f"{name} is not a dataset upload")
    source = f"{container}/{name}"
    blob = ctx.store.info(container, name)
    # Receipts only short-cut the trigger's redeliveries (default parameters, no force).
    receipt_key = f"{source}@{blob.etag}" if parameters is None and not force else None
    if receipt_key and (known_run := ctx.ledger.receipt(receipt_key)) is not None:
        logger.info("%s was already taken in as run %s", source, known_run, extra={"run_id": known_run})
        return IntakeOutcome(IntakeStatus.DUPLICATE, known_run, "this upload was already taken in")

    parameters = parameters or parameters_for(ctx.profile.parameter_presets, ctx.settings.finetune_overrides)
    with SplitSpool() as spool:
        options = validation_options(ctx.settings, parameters=parameters)
        report = _validate_into(ctx, spool, container, name, blob.etag, options)
        dataset = DatasetRef(container=container, blob=name, sha256=report.sha256, size_bytes=blob.size, etag=blob.etag)
        return _take_in(ctx, report, dataset, [source], parameters, force, spool, receipt_key)


def intake_train_test(
    ctx: AppContext, container: str, train: str, test: str, *, parameters: FineTuneParameters, force: bool = False
) -> IntakeOutcome:
    """A run from explicit train and test files (no split): both validated, the test file held out as it is."""
    for name in (train, test):
        if not is_dataset_blob(ctx.settings, name):
            raise InvalidInput(f"{name} is not a dataset (a .jsonl outside {ctx.settings.prepared_prefix})")
    train_blob, test_blob = ctx.store.info(container, train), ctx.store.info(container, test)
    with SplitSpool() as spool:
        options = replace(validation_options(ctx.settings, parameters=parameters), test_fraction=0.0)
        train_report = _validate_into(ctx, spool, container, train, train_blob.etag, options, Split.TRAIN)
        test_report = _validate_into(
            ctx, spool, container, test, test_blob.etag, replace(options, min_train_rows=1), Split.TEST
        )
        report = combine_train_test(train_report, test_report, options.max_listed_problems)
        dataset = DatasetRef(
            container=container,
            blob=train,
            sha256=report.sha256,
            size_bytes=train_blob.size + test_blob.size,
            etag=train_blob.etag,
        )
        sources = [f"{container}/{train}", f"{container}/{test}"]
        return _take_in(ctx, report, dataset, sources, parameters, force, spool, None)


def _validate_into(
    ctx: AppContext,
    spool: SplitSpool,
    container: str,
    name: str,
    etag: str,
    options: ValidationOptions,
    only: Split | None = None,
) -> ValidationReport:
    """Stream a blob through the validator; its valid lines go to the spool (all to `only` when given)."""
    sink = spool.add if only is None else (lambda _split, line: spool.add(only, line))
    return validate_chunks(ctx.store.iter_chunks(container, name, etag=etag), options, on_example=sink)


def _take_in(
    ctx: AppContext,
    report: ValidationReport,
    dataset: DatasetRef,
    sources: list[str],
    parameters: FineTuneParameters,
    force: bool,
    spool: SplitSpool,
    receipt_key: str | None,
) -> IntakeOutcome:
    """Record the validated dataset as a run (or find it), then prepare and submit it."""
    run_id = run_id_for(report.sha256, parameters, ctx.profile.base_model, salt=uuid.uuid4().hex if force else "")
    record, created = ctx.ledger.create(
        new_run(
            run_id=run_id,
            dataset=dataset,
            parameters=parameters,
            base_model=ctx.profile.base_model,
            engine=ctx.profile.name,
            now=ctx.now(),
        )
    )
    logger.info(
        "%s is run %s (%s): %s",
        " + ".join(sources),
        run_id,
        "new" if created else "known",
        report.summary(),
        extra={"run_id": run_id},
    )
    for source in sources:
        record = ctx.ledger.update(run_id, lambda r, source=source: add_source(r, source, ctx.now()))
    if not created and record.state not in (RunState.RECEIVED, RunState.VALIDATING):
        if receipt_key:
            ctx.ledger.add_receipt(receipt_key, run_id)
        return IntakeOutcome(IntakeStatus.DUPLICATE, run_id, f"same content as run {run_id} ({record.state})")
    try:
        outcome = _prepare_and_submit(ctx, record, report, spool)
    except AutopilotError as exc:
        if exc.transient:
            _note_attempt(ctx, run_id, "intake", exc)
        raise
    if receipt_key:
        ctx.ledger.add_receipt(receipt_key, run_id)
    return outcome


def _prepare_and_submit(
    ctx: AppContext, record: RunRecord, report: ValidationReport, spool: SplitSpool
) -> IntakeOutcome:
    run_id = record.run_id
    ctx.ledger.transition(run_id, advance_from(RunState.RECEIVED, RunState.VALIDATING, report.summary(), ctx.now()))
    artifacts = _write_outputs(ctx, record, report, spool)
    summary = ValidationSummary(
        valid=report.valid,
        rows=report.rows,
        train_rows=report.split.train,
        test_rows=report.split.test,
        error_counts=report.error_counts,
        warning_counts=report.warning_counts,
    )
    if not report.valid:
        ctx.ledger.transition(
            run_id,
            advance_from(
                RunState.VALIDATING,
                RunState.REJECTED,
                report.summary(),
                ctx.now(),
                validation=summary,
                artifacts=artifacts,
            ),
        )
        logger.info("run %s rejected: %s", run_id, report.summary(), extra={"run_id": run_id})
        return IntakeOutcome(IntakeStatus.REJECTED, run_id, report.summary())
    record = ctx.ledger.update(
        run_id,
        lambda r: (
            r.model_copy(update={"validation": summary, "artifacts": artifacts})
            if r.state == RunState.VALIDATING
            else None
        ),
    )
    return _submit(ctx, record)


def _write_outputs(ctx: AppContext, record: RunRecord, report: ValidationReport, spool: SplitSpool) -> RunArtifacts:
    """Prepared splits (valid datasets only) and the reports, beside the upload, under a prefix for the run.

    The content is a function of the run id, so a retry overwriting them writes the same bytes."""
    container = record.dataset.container
    prefix = f"{ctx.settings.prepared_prefix}{record.run_id}/"
    written: dict[str, str] = {}
    if report.valid:
        for split in Split:
            name = f"{prefix}{split}.jsonl"
            ctx.store.write(container, name, spool.rewound(split), content_type="application/jsonl")
            written[split.value] = f"{container}/{name}"
    ctx.store.write(container, f"{prefix}report.json", report.to_json_bytes(), content_type="application/json")
    title = f"Validation report: {record.dataset.container}/{record.dataset.blob} (run {record.run_id})"
    ctx.store.write(
        container,
        f"{prefix}report.md",
        render_markdown(report, title).encode(),
        content_type="text/markdown; charset=utf-8",
    )
    return RunArtifacts(
        report_json=f"{container}/{prefix}report.json", report_md=f"{container}/{prefix}report.md", **written
    )


def job_spec_for(settings: Settings, record: RunRecord) -> JobSpec:
    """The job a run submits: its parameters, and the prepared splits beside its dataset."""
    run_id = record.run_id
    container, prefix = record.dataset.container, f"{settings.prepared_prefix}{run_id}/"
    return JobSpec(
        run_id=run_id,
        base_model=record.base_model,
        parameters=record.parameters,
        data=TrainingData(container=container, train_blob=f"{prefix}train.jsonl", test_blob=f"{prefix}test.jsonl"),
        tags={RUN_TAG: run_id, "dataset_sha256": record.dataset.sha256},
    )


def _submit(ctx: AppContext, record: RunRecord) -> IntakeOutcome:
    run_id = record.run_id
    spec = job_spec_for(ctx.settings, record)
    try:
        job = ctx.engine.submit_job(spec)
    except AutopilotError as exc:
        if exc.transient:
            raise
        error = RunError(code=exc.code, message=exc.message)
        ctx.ledger.transition(
            run_id,
            advance_from(
                RunState.VALIDATING, RunState.FAILED, f"submission failed: {error.code}", ctx.now(), error=error
            ),
        )
        logger.error("run %s cannot be submitted: %s", run_id, error.message, extra={"run_id": run_id})
        return IntakeOutcome(IntakeStatus.FAILED, run_id, error.message)
    reason = f"job {job.name} submitted to the {ctx.engine.name} engine"
    warnings = [RunWarning(code=w.code, message=w.message) for w in job.warnings]
    for warning in warnings:
        logger.warning("run %s: %s", run_id, warning.message, extra={"run_id": run_id})
    changes: dict[str, object] = {"job_name": job.name}
    if warnings:
        changes["warnings"] = warnings
    ctx.ledger.transition(
        run_id, advance_from(RunState.VALIDATING, RunState.SUBMITTED, reason, ctx.now(), **changes)
    )
    logger.info("run %s submitted as job %s", run_id, job.name, extra={"run_id": run_id})
    return IntakeOutcome(IntakeStatus.SUBMITTED, run_id, f"job {job.name}")


def _note_attempt(ctx: AppContext, run_id: str, stage: str, exc: AutopilotError) -> None:
    """Best effort: the error that is about to be raised matters more than this note."""
    try:
        ctx.ledger.update(
            run_id, lambda r: add_attempt(r, stage=stage, code=exc.code, message=exc.message, now=ctx.now())
        )
    except AutopilotError:
        logger.warning("run %s: could not record the failed attempt", run_id, exc_info=True, extra={"run_id": run_id})


def get_run(ctx: AppContext, run_id: str) -> RunRecord:
    if not RUN_ID_PATTERN.match(run_id):
        raise InvalidInput(f"{run_id!r} is not a run id (ft- and 12 hex digits)")
    return ctx.ledger.get(run_id)


def list_runs(ctx: AppContext, *, state: str | None = None, limit: int = 100) -> list[RunRecord]:
    if state is not None and state not in RunState.__members__.values():
        raise InvalidInput(f"unknown state {state!r}; one of: {', '.join(RunState)}")
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    return ctx.ledger.list(state=RunState(state) if state else None, limit=limit)


def create_run(ctx: AppContext, request: CreateRunRequest) -> tuple[IntakeOutcome, RunRecord]:
    """An ad-hoc run of data already in the datasets container, with parameter overrides."""
    try:
        parameters = parameters_for(
            ctx.profile.parameter_presets, {**ctx.settings.finetune_overrides, **request.parameters}
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid parameters: {describe_validation_error(exc, 'parameters')}") from exc
    container = ctx.settings.datasets_container
    if request.dataset is None:
        outcome = intake_train_test(
            ctx, container, request.train, request.test, parameters=parameters, force=request.force
        )
    elif not is_dataset_blob(ctx.settings, request.dataset):
        raise InvalidInput(f"{request.dataset} is not a dataset (a .jsonl outside {ctx.settings.prepared_prefix})")
    else:
        outcome = intake_dataset(ctx, container, request.dataset, parameters=parameters, force=request.force)
    return outcome, ctx.ledger.get(outcome.run_id)
