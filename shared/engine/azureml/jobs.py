"""The run's pipeline job: submitted once (get-before-create), read, cancelled, and its finetune step's metrics.

A failed job is read further: run history has the failed steps' errors (run_history.py), which give its cause and
whether a resubmission may succeed (job_failures.py: a system error or a preempted node, never a user error)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from shared.adapters.http import HttpFailure
from shared.domain.errors import EngineError
from shared.domain.jobs import JobStatus, from_azure
from shared.engine.azureml.base_model import BaseModelLookup
from shared.engine.azureml.clients import AzureMLClients, get_or_none, state_text
from shared.engine.azureml.config import run_pipeline_spec
from shared.engine.azureml.foundation import inference_size, serving_size_warning
from shared.engine.azureml.job_failures import FailedRun, JobFailure, classify
from shared.engine.azureml.job_metrics import TRACKING_SCOPE, HttpGet, finetune_step, read_job_metrics, rest_base
from shared.engine.azureml.model_card import FoundationModel, check_fine_tunable
from shared.engine.azureml.pipeline import PipelineJobSpec, build_pipeline_job
from shared.engine.azureml.run_history import ChildRun, child_runs, run_details_body
from shared.engine.azureml.sdk_errors import translate, translated
from shared.engine.base import JobInfo, JobMetrics, JobSpec, JobWarning

logger = logging.getLogger(__name__)


class AzureMLJobs:
    def __init__(self, clients: AzureMLClients, base_model: BaseModelLookup, tracking_get: HttpGet) -> None:
        self._clients = clients
        self._base_model = base_model
        self._tracking_get = tracking_get

    def submit_job(self, spec: JobSpec) -> JobInfo:
        jobs, config = self._clients.workspace.jobs, self._clients.config
        existing = get_or_none(lambda: jobs.get(spec.job_name), f"get job {spec.job_name}")
        if existing is not None:
            return self._job_info(existing)
        model = self._base_model.foundation_model()
        notes = check_fine_tunable(model, self._clients.now())
        pipeline_spec = self.pipeline_job_spec(spec, model)
        job = build_pipeline_job(self._base_model.pipeline_component(), pipeline_spec)
        dropped = pipeline_spec.dropped_defaults_warning(config.pipeline_version)
        warnings = [JobWarning("base_model_deprecated", note) for note in notes]
        if dropped:
            warnings.append(JobWarning("model_defaults_dropped", dropped))
        retiring = serving_size_warning(config.inference_instance_type)
        if retiring:
            warnings.append(JobWarning("serving_size_retiring", retiring))
        try:
            created = jobs.create_or_update(job, experiment_name=config.experiment_name)
        except Exception as exc:
            error = translate(exc, f"submit job {spec.job_name}")
            if error.code != "azureml_already_exists":
                raise error from exc
            created = jobs.get(spec.job_name)  # a concurrent delivery submitted it first
        logger.info("run %s: submitted pipeline job %s", spec.run_id, created.name, extra={"run_id": spec.run_id})
        return replace(self._job_info(created), warnings=tuple(warnings))

    def pipeline_job_spec(self, spec: JobSpec, model: FoundationModel) -> PipelineJobSpec:
        """The job this run submits: the base model's defaults and the compute resolved against the service, and the
        serving size (a size the model cannot be served on would only show after hours of training)."""
        config = self._clients.config
        return run_pipeline_spec(
            config,
            spec,
            model_name=model.name,
            model_id=model.id,
            model_defaults=model.finetune_defaults,
            component_inputs=list(self._base_model.pipeline_component().inputs),
            compute=self._base_model.finetune_compute(model),
            serving_size=inference_size(config.inference_instance_type, model.inference_allow_list),
        )

    def get_job(self, name: str) -> JobInfo:
        job = get_or_none(lambda: self._clients.workspace.jobs.get(name), f"get job {name}")
        if job is None:
            raise EngineError(f"no job named {name} in the workspace", code="job_not_found", transient=False)
        return self._job_info(job)

    def _job_info(self, job: Any) -> JobInfo:
        info = job_info(job)
        if info.status != JobStatus.FAILED:
            return info
        return job_info(job, self.failure(job.name))

    def failure(self, name: str) -> JobFailure:
        """Why the job failed, from run history: its failed steps' errors (or its own). A run history that does not
        answer now raises (transient: the poll comes back); one that refuses the read gives an unknown cause."""
        try:
            job = FailedRun(name, run_details_body(self._clients.workspace, name))
            steps = [
                FailedRun(run.display_name or run.run_id, run_details_body(self._clients.workspace, run.run_id))
                for run in self._failed_steps(name)
            ]
        except Exception as exc:
            error = translate(exc, f"read why job {name} failed")
            if error.transient:
                raise error from exc
            logger.warning("job %s failed; its cause could not be read: %s", name, error)
            return JobFailure(cause=None, transient=False)
        failure = classify(job, steps)
        logger.info("job %s failed: %s (transient: %s)", name, failure.cause, failure.transient)
        return failure

    def _failed_steps(self, name: str, depth: int = 3) -> Iterator[ChildRun]:
        """The failed runs below the job that have no failed children of their own: where the failure happened."""
        if depth == 0:
            return
        for child in child_runs(self._clients.workspace, name):
            if from_azure(child.status) != JobStatus.FAILED:
                continue
            below = list(self._failed_steps(child.run_id, depth - 1))
            yield from below or [child]

    def cancel_job(self, name: str) -> JobInfo:
        job = self.get_job(name)
        if job.status.is_terminal:
            return job
        with translated(f"cancel job {name}"):
            self._clients.workspace.jobs.begin_cancel(name)
        return JobInfo(name=name, status=JobStatus.CANCELED, created_at=job.created_at, tags=job.tags)

    def job_metrics(self, name: str) -> JobMetrics:
        step = finetune_step(self._descendants(name))
        if step is None:
            raise EngineError(
                f"job {name} has no finetune step to read metrics from", code="metrics_not_found", transient=False
            )
        credential = self._clients.credential
        with translated("find the workspace's MLflow tracking URI"):
            workspace = self._clients.workspace.workspaces.get(self._clients.config.workspace_name)
            token = credential.get_token(TRACKING_SCOPE).token if credential else ""
        try:
            return read_job_metrics(rest_base(workspace.mlflow_tracking_uri), step.name, token, self._tracking_get)
        except (HttpFailure, ValueError, KeyError) as exc:
            raise EngineError(
                f"read the metrics of job {name} (step {step.name}): {exc}", code="metrics_unavailable"
            ) from exc

    def _descendants(self, name: str, depth: int = 3) -> Iterator[Any]:
        """Child jobs, depth first: the finetune step sits inside the chat_completion_pipeline node."""
        if depth == 0:
            return
        with translated(f"list the steps of job {name}"):
            children = list(self._clients.workspace.jobs.list(parent_job_name=name))
        for child in children:
            yield child
            yield from self._descendants(child.name, depth - 1)


def job_info(job: Any, failure: JobFailure | None = None) -> JobInfo:
    """The job as the port shows it; `failure` (a failed job's cause, from run history) gives the error its cause and
    whether the failure is transient."""
    raw = state_text(getattr(job, "status", None))
    status = from_azure(raw) or JobStatus.RUNNING  # a word not known yet: still running, never over
    error = None
    transient = False
    if status in (JobStatus.FAILED, JobStatus.CANCELED):
        cause = f" ({failure.cause})" if failure and failure.cause and status == JobStatus.FAILED else ""
        error = f"pipeline job {raw}{cause}; see its logs in Azure ML studio: {getattr(job, 'studio_url', None)}"
        transient = bool(failure and failure.transient and status == JobStatus.FAILED)
    context = getattr(job, "creation_context", None)
    return JobInfo(
        name=job.name,
        status=status,
        created_at=getattr(context, "created_at", None),
        error=error,
        tags=dict(getattr(job, "tags", None) or {}),
        failure_transient=transient,
    )
