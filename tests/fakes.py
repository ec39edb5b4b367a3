"""A small hand-written Engine for tests of code that drives an engine (the real service is out of reach here).

It keeps jobs in memory, is idempotent by job name like Azure ML, records every call, and can be told to
fail the next N submissions with a transient EngineError.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.engine.base import (
    DeploymentInfo,
    EndpointInfo,
    EndpointKeys,
    JobInfo,
    JobMetrics,
    JobSpec,
    JobStatus,
    ModelRef,
)
from shared.errors import EngineError


class FakeEngine:
    name = "fake"

    def __init__(self) -> None:
        self.jobs: dict[str, JobInfo] = {}
        self.specs: dict[str, JobSpec] = {}
        self.submit_calls = 0
        self.fail_next_submits = 0
        self._lock = threading.Lock()

    def submit_job(self, spec: JobSpec) -> JobInfo:
        with self._lock:
            self.submit_calls += 1
            if self.fail_next_submits:
                self.fail_next_submits -= 1
                raise EngineError("the workspace is throttling requests (fake)")
            if spec.run_id not in self.jobs:  # get before create, as with Azure ML job names
                self.specs[spec.run_id] = spec
                self.jobs[spec.run_id] = JobInfo(
                    name=spec.run_id, status=JobStatus.QUEUED, created_at=datetime.now(UTC), tags=dict(spec.tags)
                )
            return self.jobs[spec.run_id]

    def get_job(self, name: str) -> JobInfo:
        if name not in self.jobs:
            raise EngineError(f"no job {name}", code="job_not_found")
        return self.jobs[name]

    def cancel_job(self, name: str) -> JobInfo:
        job = self.get_job(name)
        if not job.status.is_terminal:
            job = JobInfo(name=name, status=JobStatus.CANCELED, created_at=job.created_at, tags=job.tags)
            self.jobs[name] = job
        return job

    # The lifecycle operations below are not driven by intake; they fail loudly if a test reaches them.
    def job_metrics(self, name: str) -> JobMetrics:
        raise AssertionError("FakeEngine.job_metrics is not modelled")

    def register_model(self, job_name: str, model_name: str, tags: Mapping[str, str]) -> ModelRef:
        raise AssertionError("FakeEngine.register_model is not modelled")

    def get_model(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None:
        raise AssertionError("FakeEngine.get_model is not modelled")

    def set_model_alias(self, model: ModelRef, alias: str) -> None:
        raise AssertionError("FakeEngine.set_model_alias is not modelled")

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        raise AssertionError("FakeEngine.create_or_update_endpoint is not modelled")

    def create_deployment(self, endpoint_name: str, deployment_name: str, model: ModelRef) -> DeploymentInfo:
        raise AssertionError("FakeEngine.create_deployment is not modelled")

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        raise AssertionError("FakeEngine.set_traffic is not modelled")

    def get_keys(self, endpoint_name: str) -> EndpointKeys:
        raise AssertionError("FakeEngine.get_keys is not modelled")

    def invoke(self, endpoint_name: str, request: Mapping[str, Any], deployment_name: str | None = None) -> Any:
        raise AssertionError("FakeEngine.invoke is not modelled")

    def list_endpoints(self) -> list[EndpointInfo]:
        raise AssertionError("FakeEngine.list_endpoints is not modelled")

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        raise AssertionError("FakeEngine.delete_deployment is not modelled")

    def delete_endpoint(self, name: str) -> None:
        raise AssertionError("FakeEngine.delete_endpoint is not modelled")
