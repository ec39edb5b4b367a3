"""A small hand-written Engine for tests of code that drives an engine (the Azure ML service is out of reach here).

It keeps jobs, models and endpoints in memory, is idempotent by name like Azure ML, records calls, and has knobs
to inject the failures the lifecycle must survive: throttled submissions and other throttled calls, failing
deployments, a deployment that answers nothing or answers slowly (smoke test failure), and the metrics a job reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from shared.domain.errors import EngineError
from shared.domain.jobs import JobStatus
from shared.engine.base import (
    DeploymentInfo,
    EndpointInfo,
    EndpointKeys,
    JobInfo,
    JobMetrics,
    JobSpec,
    ModelRef,
    ScoringRequest,
)


class FakeEngine:
    name = "fake"

    def __init__(self) -> None:
        self.jobs: dict[str, JobInfo] = {}
        self.specs: dict[str, JobSpec] = {}
        self.metrics: dict[str, JobMetrics] = {}
        self.models: dict[str, list[ModelRef]] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.endpoints: dict[str, EndpointInfo] = {}
        self.deployments: dict[str, dict[str, ModelRef]] = {}
        self.submit_calls = 0
        self.deployments_created = 0
        self.base_deployments_created = 0  # made for an evaluation of a line's first run
        self.fail_next_submits = 0
        self.fail_next_deployments = 0
        self.refuse_next_deployments = 0  # deployments that cannot start (a permanent error: a model that fails)
        self.silent_deployments: set[str] = set()  # deployments that answer with an empty text
        self.deployment_states: dict[str, str] = {}  # deployment name -> provisioning state (default Succeeded)
        self.throttled: dict[str, int] = {}  # operation (method name) -> how many of its next calls are throttled
        self.answer_seconds: dict[str, float] = {}  # deployment name -> how long it takes to answer
        # deployment name -> how it answers a conversation (default: "answer from <deployment>")
        self.answer_with: dict[str, Callable[[list[dict[str, str]]], str]] = {}
        self.invocations: list[tuple[str, str | None]] = []
        self._lock = threading.RLock()

    # -- knobs -----------------------------------------------------------------------------------

    def finish_job(
        self,
        name: str,
        status: JobStatus = JobStatus.COMPLETED,
        *,
        eval_loss: float = 0.8,
        base_eval_loss: float = 1.2,
        error: str | None = None,
        transient: bool = False,
    ) -> None:
        """End a job; `transient` marks a failure as the engine's own (a lost worker, a preempted node)."""
        with self._lock:
            self.jobs[name] = replace(self.jobs[name], status=status, error=error, failure_transient=transient)
            if status == JobStatus.COMPLETED:
                self.metrics[name] = JobMetrics(
                    train_loss=eval_loss - 0.1,
                    eval_loss=eval_loss,
                    base_eval_loss=base_eval_loss,
                    perplexity=2.2,
                    mean_token_accuracy=0.6,
                    loss_curve=((1, 1.5), (2, 1.0)),
                )

    def traffic(self, endpoint_name: str) -> dict[str, int]:
        return dict(self.endpoints[endpoint_name].traffic)

    def _throttle(self, operation: str) -> None:
        """Fail this call with a transient error if `throttled` says so (as Azure Resource Manager's 429s do)."""
        with self._lock:
            if self.throttled.get(operation, 0) > 0:
                self.throttled[operation] -= 1
                raise EngineError(f"{operation}: too many requests, retry later (fake)", code="throttled")

    # -- jobs ------------------------------------------------------------------------------------

    def submit_job(self, spec: JobSpec) -> JobInfo:
        with self._lock:
            self.submit_calls += 1
            if self.fail_next_submits:
                self.fail_next_submits -= 1
                raise EngineError("the workspace is throttling requests (fake)")
            name = spec.job_name
            if name not in self.jobs:  # get before create, as with Azure ML job names
                self.specs[name] = spec
                self.jobs[name] = JobInfo(
                    name=name, status=JobStatus.QUEUED, created_at=datetime.now(UTC), tags=dict(spec.tags)
                )
            return self.jobs[name]

    def get_job(self, name: str) -> JobInfo:
        if name not in self.jobs:
            raise EngineError(f"no job {name}", code="job_not_found", transient=False)
        return self.jobs[name]

    def cancel_job(self, name: str) -> JobInfo:
        job = self.get_job(name)
        if not job.status.is_terminal:
            self.jobs[name] = job = replace(job, status=JobStatus.CANCELED)
        return job

    def job_metrics(self, name: str) -> JobMetrics:
        self._throttle("job_metrics")
        if name not in self.metrics:
            raise EngineError(f"job {name} has no metrics", code="metrics_not_ready", transient=False)
        return self.metrics[name]

    # -- models ----------------------------------------------------------------------------------

    def register_model(self, job_name: str, model_name: str, tags: Mapping[str, str]) -> ModelRef:
        self._throttle("register_model")
        with self._lock:
            versions = self.models.setdefault(model_name, [])
            for model in versions:
                if model.tags.get("ft-autopilot-run") == tags.get("ft-autopilot-run"):
                    return model
            model = ModelRef(name=model_name, version=str(len(versions) + 1), tags=dict(tags))
            versions.append(model)
            return model

    def get_model(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None:
        self._throttle("get_model")
        versions = self.models.get(name, [])
        if alias is not None:
            version = self.aliases.get((name, alias))
            if version is None:
                return None
        if version is not None:
            return next((m for m in versions if m.version == version), None)
        return versions[-1] if versions else None

    def set_model_alias(self, model: ModelRef, alias: str) -> None:
        self._throttle("set_model_alias")
        self.aliases[(model.name, alias)] = model.version

    # -- endpoints -------------------------------------------------------------------------------

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        self._throttle("create_or_update_endpoint")
        with self._lock:
            if name not in self.endpoints:
                self.endpoints[name] = EndpointInfo(
                    name=name,
                    scoring_uri=f"https://{name}.fake/score",
                    tags=dict(tags),
                    created_at=datetime.now(UTC),
                    traffic={},
                )
                self.deployments[name] = {}
            return self.endpoints[name]

    def create_deployment(self, endpoint_name: str, deployment_name: str, model: ModelRef) -> DeploymentInfo:
        with self._lock:
            self._endpoint(endpoint_name)
            if self.fail_next_deployments:
                self.fail_next_deployments -= 1
                raise EngineError("quota exceeded for the instance type (fake)")
            if self.refuse_next_deployments:
                self.refuse_next_deployments -= 1
                raise EngineError(
                    f"deployment {deployment_name} did not start: the model does not load (fake)",
                    code="deployment_failed",
                    transient=False,
                )
            if deployment_name not in self.deployments[endpoint_name]:
                self.deployments_created += 1
                self.deployments[endpoint_name][deployment_name] = model
                endpoint = self.endpoints[endpoint_name]
                self.endpoints[endpoint_name] = replace(endpoint, traffic={**endpoint.traffic, deployment_name: 0})
            return self._deployment(endpoint_name, deployment_name)

    def create_base_model_deployment(self, endpoint_name: str, deployment_name: str, base_model: str) -> DeploymentInfo:
        """Counted apart from the runs' deployments (`base_deployments_created`)."""
        with self._lock:
            self._endpoint(endpoint_name)
            if deployment_name not in self.deployments[endpoint_name]:
                self.base_deployments_created += 1
                self.deployments[endpoint_name][deployment_name] = ModelRef(name=base_model, version="base")
                endpoint = self.endpoints[endpoint_name]
                self.endpoints[endpoint_name] = replace(endpoint, traffic={**endpoint.traffic, deployment_name: 0})
            return self._deployment(endpoint_name, deployment_name)

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        self._throttle("get_deployment")
        return self._deployment(endpoint_name, deployment_name)

    def _deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        with self._lock:
            model = self.deployments.get(endpoint_name, {}).get(deployment_name)
            if model is None:
                return None
            state = self.deployment_states.get(deployment_name, "Succeeded")
            return DeploymentInfo(name=deployment_name, endpoint_name=endpoint_name, model=model, state=state)

    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str:
        return f"fake log of {deployment_name} on {endpoint_name}: container exited with code 137 (out of memory)"

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        self._throttle("set_traffic")
        with self._lock:
            endpoint = self._endpoint(endpoint_name)
            unknown = set(traffic) - set(self.deployments[endpoint_name])
            if unknown or sum(traffic.values()) not in (0, 100):
                raise EngineError(f"invalid traffic {dict(traffic)}", code="invalid_traffic", transient=False)
            full = {name: traffic.get(name, 0) for name in self.deployments[endpoint_name]}
            self.endpoints[endpoint_name] = endpoint = replace(endpoint, traffic=full)
            return endpoint

    def get_keys(self, endpoint_name: str) -> EndpointKeys:
        self._endpoint(endpoint_name)
        return EndpointKeys(primary=f"primary-{endpoint_name}", secondary=f"secondary-{endpoint_name}")

    def invoke(self, request: ScoringRequest) -> Any:
        endpoint_name, deployment_name, timeout_s = request.endpoint_name, request.deployment_name, request.timeout_s
        endpoint = self._endpoint(endpoint_name)
        if deployment_name is None:
            serving = [name for name, weight in endpoint.traffic.items() if weight]
            if not serving:
                raise EngineError("no deployment has traffic", code="no_traffic", transient=False)
            deployment_name = serving[0]
        if deployment_name not in self.deployments[endpoint_name]:
            raise EngineError(f"no deployment {deployment_name}", code="deployment_not_found", transient=False)
        self.invocations.append((endpoint_name, deployment_name))
        seconds = self.answer_seconds.get(deployment_name, 0.0)
        if timeout_s is not None and seconds > timeout_s:  # the client gives up when its timeout passes
            time.sleep(timeout_s)
            raise EngineError(f"{endpoint_name} did not answer within {timeout_s:g} s (fake)", code="scoring_timeout")
        time.sleep(seconds)
        with self._lock:  # the endpoint as it is now: a shift may have changed its traffic while this answered
            current = self._endpoint(endpoint_name)
            self.endpoints[endpoint_name] = replace(
                current, request_count=current.request_count + 1, last_request_at=datetime.now(UTC)
            )
        conversations = request.body["input_data"]["input_string"]
        several = bool(conversations) and isinstance(conversations[0], list)
        answers = [self._answer(deployment_name, c) for c in (conversations if several else [conversations])]
        return {"output": answers if several else answers[0]}

    def _answer(self, deployment_name: str, conversation: list[dict[str, str]]) -> str:
        if deployment_name in self.silent_deployments:
            return ""
        answer = self.answer_with.get(deployment_name)
        return answer(conversation) if answer else f"answer from {deployment_name}"

    def list_endpoints(self) -> list[EndpointInfo]:
        return list(self.endpoints.values())

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        self._throttle("delete_deployment")
        with self._lock:
            if endpoint_name in self.deployments and deployment_name in self.deployments[endpoint_name]:
                del self.deployments[endpoint_name][deployment_name]
                endpoint = self.endpoints[endpoint_name]
                traffic = {k: v for k, v in endpoint.traffic.items() if k != deployment_name}
                self.endpoints[endpoint_name] = replace(endpoint, traffic=traffic)

    def delete_endpoint(self, name: str) -> None:
        with self._lock:
            self.endpoints.pop(name, None)
            self.deployments.pop(name, None)

    def _endpoint(self, name: str) -> EndpointInfo:
        if name not in self.endpoints:
            raise EngineError(f"no endpoint {name}", code="endpoint_not_found", transient=False)
        return self.endpoints[name]
