"""A fake of the Azure ML service at the HTTP layer, made of the service's recorded answers.

azure-ai-ml's real clients talk to it through `ServiceTransport`: they build every request, serialize every entity,
poll every long-running operation and map every error themselves, so the adapter is tested against what the SDK
really sends and really parses. The state is kept as the REST bodies the service would store (camelCase, as
recorded), and every request is recorded in `calls` as (operation, subject), with operations named after the SDK
call that sends them ("jobs.create_or_update", "online_deployments.get", ...).

Behaviour the adapter depends on, as the service shows it: a job name can be used once; an endpoint PUT answers
201 `Creating` with an `Azure-AsyncOperation` to poll (`Updating`, then `Succeeded`); a deployment stays `Creating`
until it has been looked at twice, then becomes `deployment_outcome`; traffic may only name existing deployments and
sum to 0 or 100, and 0% entries are not kept; a deployment with traffic cannot be deleted; a failed job (`fail_job`)
has its error, and its failed steps', in run history (`runs/<id>/details`), not on the job. Routes live in routes.py.
"""

from __future__ import annotations

import itertools
import threading
import urllib.parse
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from azure.core.credentials import AccessToken, AccessTokenInfo

from tests.engine.azureml_service import recorded
from tests.engine.azureml_service.names import REGISTRY, REGISTRY_PATH, RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE
from tests.engine.azureml_service.scoring import FakeMetrics, ScoringServer
from tests.engine.azureml_service.transport import ServiceTransport

JOB_SCRIPT = ("NotStarted", "Running", "Completed")  # statuses a job shows on successive gets
TERMINAL_JOB_STATUSES = ("Completed", "Failed", "Canceled")


class FakeCredential:
    """A TokenCredential: the only stand-in for Entra ID, which the tests must never reach. Tokens are JWTs whose
    audience is the scope's resource, as Entra issues them: the SDK decodes them (unverified) before it submits a
    job, and refuses one whose audience is not https://ml.azure.com."""

    def __init__(self, service: AzureMLService) -> None:
        self.service = service

    @staticmethod
    def token_for(*scopes: str) -> str:
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        claims = {
            "aud": audience,
            "oid": "11111111-2222-3333-4444-555555555555",
            "tid": "66666666-7777-8888-9999-000000000000",
            "appid": "ft-autopilot-tests",
        }
        return jwt.encode(claims, "a fake signing key, long enough for HS256", algorithm="HS256")

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.service.record("credential.get_token", " ".join(scopes))
        return AccessToken(self.token_for(*scopes), int(datetime.now(UTC).timestamp()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.service.record("credential.get_token", " ".join(scopes))
        return AccessTokenInfo(self.token_for(*scopes), int(datetime.now(UTC).timestamp()) + 3600)


class AzureMLService:
    """The whole fake: state, knobs, and the clients that reach it."""

    def __init__(self, base_model_spec: dict[str, Any] | None = None) -> None:
        from tests.engine.azureml_service.routes import Router

        self.lock = threading.RLock()
        self.calls: list[tuple[str, str]] = []
        self.clock = itertools.count(1)
        self.started = datetime.now(UTC) - timedelta(hours=3)
        self.closed = False
        # state, as REST bodies
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_requests: dict[str, dict[str, Any]] = {}  # each job's PUT body, as the SDK sent it
        self.job_children: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.step_metrics: dict[str, dict[str, Any]] = {}
        self.run_errors: dict[str, dict[str, Any]] = {}  # run id -> its error in run history (an ErrorResponse)
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, str]] = {}
        self.deployments: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.operations: dict[str, dict[str, Any]] = {}  # LRO id -> {"status": ..., "polls": n, "resource": ...}
        self.computes = {
            "gpu-a100": ("Standard_NC24ads_A100_v4", "Succeeded"),
            "gpu-k80": ("Standard_NC6", "Succeeded"),
            "gpu-broken": ("Standard_ND96asr_v4", "Failed"),
        }
        spec = base_model_spec or recorded.spec_document()
        self.registry_models: dict[tuple[str, str], dict[str, Any]] = {}
        self.put_registry_model(spec)
        component = recorded.spec_document(recorded.COMPONENT_SPEC)
        self.registry_components = {
            (component["name"], str(component["version"])): recorded.registry_component(
                REGISTRY_PATH, component, self.started
            )
        }
        # knobs
        self.job_script: tuple[str, ...] = JOB_SCRIPT
        self.deployment_outcome = "Succeeded"
        self.silent_deployments: set[str] = set()
        self.finetune_metrics: dict[str, Any] = {
            "loss": [(10, 1.9), (20, 1.4), (30, 1.1)],
            "eval_loss": 1.05,
            "train_loss": 1.3,
        }
        self._deployment_looks: dict[tuple[str, str], int] = defaultdict(int)
        self._job_progress: dict[str, int] = {}
        self.router = Router(self)
        self.transport = ServiceTransport(self.router.handle)
        self.credential = FakeCredential(self)
        self.scoring = ScoringServer(self)
        self.metrics = FakeMetrics(self)

    # -- clients --------------------------------------------------------------------------------------

    def clients(self) -> tuple[Any, Any]:
        """A workspace MLClient and a registry MLClient, exactly as AzureMLEngine.connect makes them, but over
        this fake's transport and credential."""
        from azure.ai.ml import MLClient

        workspace = MLClient(
            self.credential,
            subscription_id=SUBSCRIPTION,
            resource_group_name=RESOURCE_GROUP,
            workspace_name=WORKSPACE,
            transport=self.transport,
            show_progress=False,
        )
        registry = MLClient(self.credential, registry_name=REGISTRY, transport=self.transport, show_progress=False)
        return workspace, registry

    # -- bookkeeping ----------------------------------------------------------------------------------

    def record(self, operation: str, subject: str) -> None:
        with self.lock:
            self.calls.append((operation, subject))

    def count(self, operation: str) -> int:
        return sum(1 for op, _ in self.calls if op == operation)

    def now(self) -> datetime:
        """Creation times: three hours ago, a second apart (old enough to be past any grace period)."""
        return self.started + timedelta(seconds=next(self.clock))

    def close(self) -> None:
        self.closed = True  # pollers still running in the SDK's threads get a failure and stop
        self.scoring.close()

    def tracking_get(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        """MLflow's REST API on the workspace's tracking server. No recording of it exists: this stays at the
        operation level (the adapter's own HTTP GET), answering in MLflow's documented runs/get and
        metrics/get-history shapes from the finetune step's metrics."""
        audience = jwt.decode(
            headers.get("Authorization", "").removeprefix("Bearer "), options={"verify_signature": False}
        )["aud"]
        assert audience == "https://management.azure.com", "the tracking token is for ARM's audience"
        parsed = urllib.parse.urlparse(url)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        self.record("mlflow." + "/".join(parsed.path.rsplit("/", 2)[-2:]), query["run_id"])
        metrics = self.step_metrics.get(query["run_id"])
        if metrics is None:
            raise ValueError(f"no MLflow run {query['run_id']}")
        if parsed.path.endswith("/runs/get"):
            latest = [{"key": key, "value": value} for key, value in metrics.items() if not isinstance(value, list)]
            latest.append({"key": "loss", "value": metrics["loss"][-1][1]})
            return {"run": {"info": {"run_id": query["run_id"]}, "data": {"metrics": latest}}}
        assert query["metric_key"] == "loss"
        return {"metrics": [{"key": "loss", "value": v, "step": step} for step, v in metrics["loss"]]}

    # -- state helpers the tests use ------------------------------------------------------------------

    def put_registry_model(self, spec: dict[str, Any]) -> None:
        key = (str(spec["name"]), str(spec["version"]))
        self.registry_models[key] = recorded.registry_model_version(REGISTRY_PATH, spec, self.started)

    def set_job_status(self, name: str, status: str) -> None:
        with self.lock:
            self.jobs[name]["properties"]["status"] = status

    def fail_job(
        self,
        name: str,
        step_error: dict[str, Any] | None,
        step: str = "finetune",
        job_error: dict[str, Any] | None = None,
    ) -> None:
        """The job fails at one step: that step, the pipeline node holding it and the job become Failed, the step
        with `step_error` in run history (None: failed without one) and the job with `job_error`. `step=""` fails
        the job alone, before any step ran (a job that could not start)."""
        node = f"{name}_chat_completion_pipeline"
        with self.lock:
            self.jobs[name]["properties"]["status"] = "Failed"
            if job_error is not None:
                self.run_errors[name] = job_error
            if not step:
                return
            failed = {node, f"{name}_{step}"}
            for child in self.job_children[name] + self.job_children[node]:
                if child["runId"] in failed:
                    child["status"] = "Failed"
                    self.jobs[child["runId"]]["properties"]["status"] = "Failed"
                elif child["runId"].endswith("_model_import") and child["status"] != "Failed":
                    child["status"] = "Completed"
            if step_error is not None:
                self.run_errors[f"{name}_{step}"] = step_error

    def traffic(self, endpoint_name: str) -> dict[str, int]:
        return dict(self.endpoints[endpoint_name]["properties"]["traffic"])

    def deployment_names(self, endpoint_name: str) -> set[str]:
        return set(self.deployments.get(endpoint_name, {}))

    def advance_job(self, name: str) -> None:
        """A GET of a job moves it one status along the script, until it ends."""
        job = self.jobs[name]["properties"]
        if job["status"] in TERMINAL_JOB_STATUSES:
            return
        step = min(self._job_progress.get(name, 0) + 1, len(self.job_script) - 1)
        self._job_progress[name] = step
        job["status"] = self.job_script[step]

    def look_at_deployment(self, endpoint_name: str, name: str) -> None:
        """Still provisioning at the first look, done at the next (as the idle sweep sees a slow deployment)."""
        body = self.deployments[endpoint_name][name]
        if body["properties"]["provisioningState"] != "Creating":
            return
        self._deployment_looks[(endpoint_name, name)] += 1
        if self._deployment_looks[(endpoint_name, name)] >= 2:
            body["properties"]["provisioningState"] = self.deployment_outcome
