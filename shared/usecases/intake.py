"""Dataset intake: an upload or an ad-hoc request becomes exactly one validated, prepared and submitted run.

The same content is one run however often it is delivered and under whatever names (the run id is derived from
it); a transient storage or engine error is noted on the run and raised, so the platform retries.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from shared.adapters.ledger import RecordChange
from shared.adapters.spool import SplitSpool
from shared.api.http import CreateRunRequest
from shared.context import AppContext
from shared.domain.chatdata import (
    Split,
    ValidationOptions,
    ValidationReport,
    combine_train_test,
    render_markdown,
    validate_chunks,
)
from shared.domain.errors import AutopilotError, InvalidInput, describe_validation_error
from shared.domain.finetune import FineTuneParameters
from shared.domain.lines import (
    DEFAULT_LINE,
    EffectiveLineConfig,
    InvalidLineConfig,
    InvalidLineName,
    check_line_name,
    line_of,
)
from shared.domain.pricing import RunEstimate
from shared.domain.runs import (
    DatasetRef,
    RunArtifacts,
    RunError,
    RunRecord,
    RunState,
    UploadUsed,
    ValidationSummary,
    add_source,
    advance_from,
    new_run,
    run_id_for,
)
from shared.settings import Settings
from shared.usecases.accumulate import line_uploads, union_lines
from shared.usecases.costs import estimate_within_budget
from shared.usecases.lines import line_config, settings_only
from shared.usecases.submission import IntakeOutcome, IntakeStatus, note_attempt, submit
from shared.usecases.validation import validation_options

logger = logging.getLogger(__name__)


DATASET_SUFFIX = ".jsonl"
RECORDABLE_FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
UNNAMEABLE_LINE = "_unnamed"


def is_dataset_blob(settings: Settings, name: str) -> bool:
    return name.endswith(DATASET_SUFFIX) and not name.startswith(settings.prepared_prefix)


def intake_dataset(
    ctx: AppContext,
    container: str,
    name: str,
    *,
    parameters: Mapping[str, object] | None = None,
    force: bool = False,
    line: str | None = None,
) -> IntakeOutcome:
    """An uploaded blob becomes exactly one run of its line: validated, split, recorded and, when valid, submitted.

    Safe to call any number of times for the same blob, concurrently too. Invalid data (and an upload whose line
    name or line.json is unusable) is recorded and returned; transient storage or engine errors are raised (so the
    platform retries) after being noted on the run when there is one. `parameters` go over the line's; `force`
    makes a new run even for content that was run before; `line` overrides the line the blob's folder names.
    """
    if not is_dataset_blob(ctx.settings, name):
        logger.info("ignoring %s/%s: not a %s dataset upload", container, name, DATASET_SUFFIX)
        return IntakeOutcome(IntakeStatus.IGNORED, None, f"{name} is not a dataset upload")
    source = f"{container}/{name}"
    blob = ctx.store.info(container, name)
    # Receipts only short-cut the trigger's redeliveries (the line's parameters, no force).
    receipt_key = f"{source}@{blob.etag}" if parameters is None and not force and line is None else None
    if receipt_key and (known_run := ctx.ledger.receipt(receipt_key)) is not None:
        logger.info("%s was already taken in as run %s", source, known_run, extra={"run_id": known_run})
        return IntakeOutcome(IntakeStatus.DUPLICATE, known_run, "this upload was already taken in")

    config, problem = _line_of_upload(ctx, name, line)
    run_parameters = _with_overrides(config.parameters, parameters or {})
    dataset = DatasetRef(
        container=container,
        blob=name,
        sha256="",
        size_bytes=blob.size,
        etag=blob.etag,
        uploaded_at=blob.last_modified,
    )
    with SplitSpool() as spool:
        options = validation_options(ctx.settings, parameters=run_parameters)
        uploads: list[UploadUsed] = []
        if config.accumulate and problem is None:
            # the upload is judged alone (its line numbers, its report); a valid one trains on the line's union
            report = validate_chunks(ctx.store.iter_chunks(container, name, etag=blob.etag), options)
            if report.valid:
                union = line_uploads(ctx, config.line, dataset.model_copy(update={"sha256": report.sha256}))
                report = validate_chunks(union_lines(ctx, union), options, on_example=spool.add)
                uploads = union.used
        else:
            report = _validate_into(ctx, spool, container, name, blob.etag, options)
        intake = _Intake(
            config=config,
            parameters=run_parameters,
            problem=problem,
            uploads=uploads,
            force=force,
            receipt_key=receipt_key,
        )
        return _take_in(ctx, report, dataset.model_copy(update={"sha256": report.sha256}), [source], spool, intake)


def intake_train_test(
    ctx: AppContext,
    container: str,
    train: str,
    test: str,
    *,
    parameters: Mapping[str, object] | None = None,
    force: bool = False,
    line: str | None = None,
) -> IntakeOutcome:
    """A run from explicit train and test files (no split): both validated, the test file held out as it is."""
    for name in (train, test):
        if not is_dataset_blob(ctx.settings, name):
            raise InvalidInput(f"{name} is not a dataset (a .jsonl outside {ctx.settings.prepared_prefix})")
    config, problem = _line_of_upload(ctx, train, line)
    if problem is not None:
        raise problem  # an ad-hoc request: answered, not recorded
    run_parameters = _with_overrides(config.parameters, parameters or {})
    train_blob, test_blob = ctx.store.info(container, train), ctx.store.info(container, test)
    with SplitSpool() as spool:
        options = replace(validation_options(ctx.settings, parameters=run_parameters), test_fraction=0.0)
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
            uploaded_at=max(filter(None, (train_blob.last_modified, test_blob.last_modified)), default=None),
        )
        sources = [f"{container}/{train}", f"{container}/{test}"]
        intake = _Intake(config=config, parameters=run_parameters, force=force)
        return _take_in(ctx, report, dataset, sources, spool, intake)


def create_run(ctx: AppContext, request: CreateRunRequest) -> tuple[IntakeOutcome, RunRecord]:
    """An ad-hoc run of data already in the datasets container, with parameter overrides over its line's."""
    container = ctx.settings.datasets_container
    dataset = request.dataset or request.train
    assert dataset is not None  # CreateRunRequest: dataset, or both train and test
    config, problem = _line_of_upload(ctx, dataset, request.line)
    if problem is not None:
        raise problem  # an ad-hoc request: answered, not recorded
    _with_overrides(config.parameters, request.parameters)  # bad parameters are refused before any blob is read
    if request.dataset is None:
        assert request.train is not None and request.test is not None
        outcome = intake_train_test(
            ctx,
            container,
            request.train,
            request.test,
            parameters=request.parameters,
            force=request.force,
            line=request.line,
        )
    elif not is_dataset_blob(ctx.settings, request.dataset):
        raise InvalidInput(f"{request.dataset} is not a dataset (a .jsonl outside {ctx.settings.prepared_prefix})")
    else:
        outcome = intake_dataset(
            ctx, container, request.dataset, parameters=request.parameters, force=request.force, line=request.line
        )
    assert outcome.run_id is not None  # only an ignored upload has none, and both names were checked above
    return outcome, ctx.ledger.get(outcome.run_id)


ENDED_WITHOUT_MODEL = frozenset({RunState.FAILED, RunState.CANCELED})


def refused_repeat(outcome: IntakeOutcome, record: RunRecord) -> str | None:
    """Why an ad-hoc request for content whose run already ended failed (or canceled) starts nothing: the answer
    must not read as if it had started. None when the request took (or is still taking) its course."""
    if outcome.status != IntakeStatus.DUPLICATE or record.state not in ENDED_WITHOUT_MODEL:
        return None
    why = f" ({record.error.code}: {record.error.message})" if record.error else ""
    return (
        f"run {record.run_id} for this content and these parameters exists and ended {record.state}{why}; "
        'nothing was started: send the request again with "force": true to start a new run'
    )


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


@dataclass(frozen=True)
class _Intake:
    """What one intake decided before recording: the line's config, the run's parameters, and how to record it."""

    config: EffectiveLineConfig
    parameters: FineTuneParameters
    problem: AutopilotError | None = None  # an unusable line name or line.json: the upload is recorded rejected
    uploads: list[UploadUsed] = field(default_factory=list)
    force: bool = False
    receipt_key: str | None = None


def _line_of_upload(
    ctx: AppContext, name: str, line: str | None
) -> tuple[EffectiveLineConfig, InvalidLineName | InvalidLineConfig | None]:
    """The line's config, or the settings' with the reason the line cannot be used."""
    raw = line if line is not None else (name.split("/", 1)[0] if "/" in name else DEFAULT_LINE)
    try:
        resolved = check_line_name(line) if line is not None else line_of(name)
        return line_config(ctx, resolved), None
    except (InvalidLineName, InvalidLineConfig) as problem:
        # the rejected run is recorded under the folder's name when it is a plain name (the ledger's index names
        # blobs after it), else under one placeholder; the error names the folder either way
        return settings_only(ctx, raw if RECORDABLE_FOLDER.fullmatch(raw) else UNNAMEABLE_LINE), problem


def _with_overrides(base: FineTuneParameters, overrides: Mapping[str, object]) -> FineTuneParameters:
    if not overrides:
        return base
    try:
        return FineTuneParameters.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise InvalidInput(f"invalid parameters: {describe_validation_error(exc, 'parameters')}") from exc


def _take_in(
    ctx: AppContext,
    report: ValidationReport,
    dataset: DatasetRef,
    sources: list[str],
    spool: SplitSpool,
    intake: _Intake,
) -> IntakeOutcome:
    """Record the validated dataset as a run of its line (or find it), then prepare and submit it."""
    config, receipt_key = intake.config, intake.receipt_key
    run_id = run_id_for(
        report.sha256,
        intake.parameters,
        config.base_model,
        salt=uuid.uuid4().hex if intake.force else ("unusable-line" if intake.problem else ""),
        line=config.line,
    )
    record, created = ctx.ledger.create(
        new_run(
            run_id=run_id,
            dataset=dataset,
            parameters=intake.parameters,
            base_model=config.base_model,
            engine=ctx.profile.name,
            now=ctx.now(),
            line_config=config,
        ).model_copy(update={"uploads": intake.uploads})
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
        record = ctx.ledger.update(run_id, _adding_source(ctx, source))
    if not created and record.state not in (RunState.RECEIVED, RunState.VALIDATING):
        if receipt_key:
            ctx.ledger.add_receipt(receipt_key, run_id)
        return IntakeOutcome(IntakeStatus.DUPLICATE, run_id, f"same content as run {run_id} ({record.state})")
    try:
        outcome = _prepare_and_submit(ctx, record, report, spool, intake.problem)
    except AutopilotError as exc:
        if exc.transient:
            note_attempt(ctx, run_id, "intake", exc)
        raise
    if receipt_key:
        ctx.ledger.add_receipt(receipt_key, run_id)
    return outcome


def _adding_source(ctx: AppContext, source: str) -> RecordChange:
    """The ledger change that adds one source to the run (now: when it is applied)."""
    return lambda record: add_source(record, source, ctx.now())


def _prepare_and_submit(
    ctx: AppContext, record: RunRecord, report: ValidationReport, spool: SplitSpool, problem: AutopilotError | None
) -> IntakeOutcome:
    run_id = record.run_id
    ctx.ledger.transition(run_id, advance_from(RunState.RECEIVED, RunState.VALIDATING, report.summary(), ctx.now()))
    refusal: AutopilotError | None = problem
    estimate: RunEstimate | None = None
    if report.valid and problem is None:
        estimate, refusal = estimate_within_budget(ctx, record, report)
        report = report.model_copy(update={"cost_estimate": estimate})
    artifacts = _write_outputs(ctx, record, report, spool, splits=report.valid and refusal is None)
    summary = ValidationSummary(
        valid=report.valid,
        rows=report.rows,
        train_rows=report.split.train,
        test_rows=report.split.test,
        error_counts=report.error_counts,
        warning_counts=report.warning_counts,
    )
    if not report.valid or refusal is not None:
        reason = f"{refusal.code}: {refusal.message}" if refusal else report.summary()
        ctx.ledger.transition(
            run_id,
            advance_from(
                RunState.VALIDATING,
                RunState.REJECTED,
                reason,
                ctx.now(),
                validation=summary,
                artifacts=artifacts,
                cost_estimate=estimate,
                error=RunError(code=refusal.code, message=refusal.message) if refusal else None,
            ),
        )
        logger.info("run %s rejected: %s", run_id, reason, extra={"run_id": run_id})
        return IntakeOutcome(IntakeStatus.REJECTED, run_id, reason)
    record = ctx.ledger.update(
        run_id,
        lambda r: (
            r.model_copy(update={"validation": summary, "artifacts": artifacts, "cost_estimate": estimate})
            if r.state == RunState.VALIDATING
            else None
        ),
    )
    return submit(ctx, record)


def _write_outputs(
    ctx: AppContext, record: RunRecord, report: ValidationReport, spool: SplitSpool, *, splits: bool
) -> RunArtifacts:
    """Prepared splits (valid datasets only) and the reports, beside the upload, under a prefix for the run.

    The content is a function of the run id, so a retry overwriting them writes the same bytes."""
    container = record.dataset.container
    prefix = f"{ctx.settings.prepared_prefix}{record.run_id}/"
    written: dict[str, str] = {}
    if splits:
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
