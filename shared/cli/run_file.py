"""`autopilot run`: one dataset file through the same services the triggers use, synchronously.

validate -> prepare -> submit (intake_dataset), then follow the job the way on_job_event would
(record_job_status, complete_run): review, gate, register, deploy, smoke test, traffic shift.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import SecretStr

from shared.adapters.azurite import start_azurite
from shared.context import AppContext, install_context
from shared.domain.chatdata import ValidationReport, validate_chunks
from shared.domain.errors import AutopilotError, InvalidInput
from shared.domain.finetune import parameters_for
from shared.domain.jobs import JobStatus
from shared.domain.pricing import OverBudget, RunEstimate
from shared.domain.runs import DatasetRef, RunRecord, RunState, new_run, run_id_for
from shared.engine import engine_profile
from shared.engine.base import JobInfo
from shared.settings import Settings
from shared.usecases.costs import check_run_budget, estimate_of_report
from shared.usecases.intake import intake_dataset
from shared.usecases.lifecycle.jobs import complete_run
from shared.usecases.lifecycle.retries import retry_or_fail
from shared.usecases.lifecycle.status import record_job_status
from shared.usecases.submission import IntakeStatus, job_spec_for
from shared.usecases.validation import validation_options

if TYPE_CHECKING:
    from shared.engine.azureml.dry_run import DryRun
    from shared.engine.azureml.model_card import FoundationModel

POLL_S = 1.0
READ_BYTES = 4 << 20
CLI_UPLOAD_PREFIX = "cli/"


@dataclass(frozen=True)
class RunResult:
    record: RunRecord
    outcome: str

    def summary(self) -> dict[str, Any]:
        record = self.record
        return {
            "run_id": record.run_id,
            "status": record.state.value,
            "endpoint": record.endpoint.name if record.endpoint else None,
            "deployment": record.endpoint.deployment if record.endpoint else None,
            "scoring_uri": record.endpoint.scoring_uri if record.endpoint else None,
            "model": f"{record.model.name}:{record.model.version}" if record.model else None,
            "metrics": record.metrics.model_dump() if record.metrics else None,
            "smoke_test": record.smoke_test.model_dump() if record.smoke_test else None,
            "evaluation": record.evaluation.model_dump(mode="json") if record.evaluation else None,
            "error": record.error.model_dump() if record.error else None,
            "reports": {k: v for k, v in record.artifacts.model_dump().items() if v},
        }


@contextlib.contextmanager
def app_context(settings: Settings) -> Iterator[AppContext]:
    """The configured storage, or, when none is configured, a private Azurite kept under the state folder."""
    azurite = None
    if settings.storage_connection_string is None and settings.storage_account_url is None:
        azurite = start_azurite(settings.local_state_dir.resolve() / "azurite")
        settings = settings.model_copy(update={"storage_connection_string": SecretStr(azurite.connection_string)})
    context = AppContext.from_settings(settings)
    install_context(context)
    try:
        context.store.ensure_container(settings.datasets_container)
        context.ledger.ensure_ready()
        yield context
    finally:
        install_context(None)
        if azurite is not None:
            azurite.stop()


def run_file(ctx: AppContext, path: Path, progress: TextIO = sys.stderr) -> RunResult:
    container = ctx.settings.datasets_container
    name = f"{CLI_UPLOAD_PREFIX}{path.name}"
    say = _Reporter(progress)
    say.line(f"uploading {path} to {container}/{name}")
    with open(path, "rb") as data:
        ctx.store.write(container, name, data, content_type="application/jsonl")
    outcome = intake_dataset(ctx, container, name)
    if outcome.run_id is None:
        raise AutopilotError(f"{path} was not taken in: {outcome.detail}", code="not_a_dataset")
    record = ctx.ledger.get(outcome.run_id)
    say.line(f"run {record.run_id}: {outcome.status} ({outcome.detail})")
    if outcome.status in (IntakeStatus.REJECTED, IntakeStatus.FAILED) or record.is_terminal:
        return RunResult(record, outcome.status)
    if record.state in (RunState.SUBMITTED, RunState.RUNNING):
        record = _follow_job(ctx, record, say)
    if record.state == RunState.TRAINED or record.state in (RunState.REGISTERED, RunState.DEPLOYING):
        say.line("training done: reviewing metrics, gating, registering, deploying, smoke-testing")
        record = complete_run(ctx, record.run_id)
    say.line(f"run {record.run_id}: {record.state}" + (f" ({record.error.message})" if record.error else ""))
    return RunResult(record, record.state.value)


@dataclass(frozen=True)
class DryRunResult:
    """What `autopilot run --dry-run` found: the validation, and the job the run would submit (None if invalid)."""

    report: ValidationReport
    job: DryRun | None = None
    refusal: AutopilotError | None = None  # the base model or compute the service would refuse
    notes: list[str] = field(default_factory=list)
    estimate: RunEstimate | None = None  # what the run would take and cost (valid data only)

    def to_dict(self) -> dict[str, Any]:
        report = self.report
        validation: dict[str, Any] = {
            "valid": report.valid,
            "rows": report.rows,
            "sha256": report.sha256,
            "split": report.split.model_dump(),
        }
        if not report.valid:
            validation["error_counts"] = report.error_counts
        job = self.job
        refusal = self.refusal
        return {
            "dry_run": True,
            "run_id": job.job_name if job else None,
            "validation": validation,
            "error": {"code": refusal.code, "message": refusal.message} if refusal else None,
            "display_name": job.display_name if job else None,
            "inference_instance_type": job.inference_instance_type if job else None,
            "cost_estimate": self.estimate.model_dump(mode="json") if self.estimate else None,
            "assumptions": [*self.notes, *(job.assumptions if job else [])],
            "warnings": job.warnings if job else [],
            "dropped_model_defaults": job.dropped_defaults if job else {},
            "pipeline_job": job.request_body if job else None,
        }


def dry_run(settings: Settings, path: Path, model_file: Path | None = None) -> DryRunResult:
    """`autopilot run --dry-run`: validate the file here, then build the Azure ML pipeline job its run would submit,
    without storage, network or credentials. Invalid data gets its report and no job. With `model_file` (the base
    model's YAML) that model is the base model, checked as the service would: a refusal gets the report and no job."""
    from shared.engine.azureml.config import AzureMLConfig
    from shared.engine.azureml.dry_run import offline_pipeline_job  # azure.ai.ml: imported only for a dry run
    from shared.engine.azureml.foundation import BaseModelUnavailable, ComputeNotUsable, parse_base_model_id

    config = AzureMLConfig.from_settings(settings, require_workspace=False)
    model, notes = None, []
    if model_file is None:
        parse_base_model_id(config.base_model_id, config.registry_name)  # a bad setting is bad usage: exit 2
    else:
        model = read_model_file(model_file, config.registry_name)
        if model.id.lower() != settings.base_model_id.strip().lower():
            notes.append(
                f"BASE_MODEL_ID is {settings.base_model_id}; this dry run uses the model file's {model.id}: set "
                "BASE_MODEL_ID to it for the real run"
            )
        settings = settings.model_copy(update={"base_model_id": model.id})
        config = replace(config, base_model_id=model.id)
    profile = engine_profile(settings)
    parameters = parameters_for(profile.parameter_presets, settings.finetune_overrides)
    options = validation_options(settings, parameters=parameters)
    with open(path, "rb") as data:
        report = validate_chunks(iter(lambda: data.read(READ_BYTES), b""), options)
    if not report.valid:
        return DryRunResult(report)
    dataset = DatasetRef(
        container=settings.datasets_container,
        blob=f"{CLI_UPLOAD_PREFIX}{path.name}",
        sha256=report.sha256,
        size_bytes=path.stat().st_size,
    )
    record = new_run(
        run_id=run_id_for(report.sha256, parameters, profile.base_model),
        dataset=dataset,
        parameters=parameters,
        base_model=profile.base_model,
        engine=profile.name,
        now=datetime.now(UTC),
    )
    try:
        job = offline_pipeline_job(config, job_spec_for(settings, record), model=model, now=datetime.now(UTC))
    except (BaseModelUnavailable, ComputeNotUsable) as exc:
        return DryRunResult(report, refusal=exc, notes=notes)
    estimate = estimate_of_report(settings, profile, record, report)
    try:
        check_run_budget(settings, None, estimate)
    except OverBudget as exc:
        return DryRunResult(report, job, refusal=exc, notes=notes, estimate=estimate)
    return DryRunResult(report, job, notes=notes, estimate=estimate)


def read_model_file(path: Path, registry: str) -> FoundationModel:
    """A model's YAML (azureml-assets spec.yaml, or `az ml model show -o yaml`) as the dry run's base model."""
    import yaml

    from shared.engine.azureml.model_card import from_model_document

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read the model file {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidInput(f"the model file {path} is not a YAML mapping")
    return from_model_document(document, registry=registry)


def _follow_job(ctx: AppContext, record: RunRecord, say: _Reporter) -> RunRecord:
    """Poll the run's job to its end; a job resubmitted after a transient failure is followed in its turn."""
    engine, run_id, job_name = ctx.engine, record.run_id, record.job_name
    assert job_name is not None  # set on the transition to submitted
    last_status: JobStatus | None = None
    try:
        while True:
            job = engine.get_job(job_name)
            if job.status != last_status:
                say.end_bar()
                say.line(f"job {job.name}: {job.status}")
                last_status = job.status
                if job.status in (JobStatus.RUNNING, JobStatus.CANCELED):
                    record = record_job_status(ctx, run_id, job.status, error=job.error)
                elif job.status == JobStatus.FAILED:
                    record = retry_or_fail(ctx, run_id, job)
                    if record.job_name != job_name and record.job_name is not None:
                        job_name, last_status = record.job_name, None  # resubmitted: follow the new job
                        continue
            if job.status.is_terminal:
                say.end_bar()
                if job.status == JobStatus.COMPLETED:
                    return record_job_status(ctx, run_id, JobStatus.COMPLETED)
                return ctx.ledger.get(run_id)
            say.bar(job)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        say.end_bar()
        say.line(f"interrupted: canceling job {job_name}")
        engine.cancel_job(job_name)
        record_job_status(ctx, run_id, JobStatus.CANCELED, error="canceled from the command line")
        raise


class _Reporter:
    """Progress on a terminal as a redrawn bar; elsewhere (CI logs) a line every 10%."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._bar_open = False
        self._last_decile = -1

    def line(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def bar(self, job: JobInfo) -> None:
        progress = job.progress
        if progress is None or not progress.total_steps:
            return
        fraction = min(progress.step / progress.total_steps, 1.0)
        loss = f"  loss {progress.loss:.4f}" if progress.loss is not None else ""
        text = f"training [{'#' * int(fraction * 30):<30}] {progress.step}/{progress.total_steps}{loss}"
        if self._tty:
            print("\r" + text, end="", file=self._out, flush=True)
            self._bar_open = True
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.line(text)

    def end_bar(self) -> None:
        if self._bar_open:
            print(file=self._out, flush=True)
            self._bar_open = False
