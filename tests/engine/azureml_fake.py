"""A hand-written, recording fake of the Azure ML service, as far as the azure-ai-ml adapter reaches it.

Azure cannot be reached from here, so this stands at that boundary: the MLClient operation groups the adapter calls
(jobs, models, online_endpoints, online_deployments, compute, workspaces, components), the registry, Azure Monitor's
metrics query, the MLflow tracking REST API and the credential. It keeps the real SDK entities it is given, raises the
real azure.core exceptions, records every call in `calls`, and behaves as the service does where the adapter depends
on it: a duplicate job name is rejected, a deployment provisions before it succeeds (or fails), traffic may only name
existing deployments and sum to 0 or 100 and keeps no 0% entries (the SDK strips them before it sends), a deployment
with traffic cannot be deleted, an endpoint's creation time is in its properties, and a model label that names no
version raises the SDK's ValidationException rather than a 404. Scoring is real HTTP: each
endpoint's scoring URI is a loopback server that checks the key and honours `azureml-model-deployment`.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import urllib.parse
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

from azure.ai.ml.exceptions import ErrorTarget, ValidationErrorType, ValidationException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.engine.azureml.pipeline import job_request_body, load_offline_component

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RESOURCE_GROUP = "rg-ml"
WORKSPACE = "ws-finetune"
WORKSPACE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
)
BASE_MODEL_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"
# the shape of the registry model's tags: a Python literal as text, as the notebook reads it
PHI3_DEFAULTS = (
    "{'apply_deepspeed': 'true', 'deepspeed_stage': 2, 'apply_lora': 'true', 'precision': 16, "
    "'learning_rate': 5e-06, 'lr_scheduler_type': 'cosine', 'num_train_epochs': 1, "
    "'per_device_train_batch_size': 1, 'save_total_limit': 1}"
)
INFERENCE_SIZES = ["Standard_NC6s_v3", "Standard_NC24ads_A100_v4"]
FINETUNE_SIZES = ["Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_ND96asr_v4"]
VM_SIZES = {
    "Standard_NC24ads_A100_v4": 1,
    "Standard_NC48ads_A100_v4": 2,
    "Standard_ND96asr_v4": 8,
    "Standard_NC6s_v3": 1,
    "Standard_NC6": 1,
    "Standard_D13_v2": 0,
}
JOB_SCRIPT = ("NotStarted", "Running", "Completed")  # statuses a job shows on successive gets


class Poller:
    """An LROPoller that has finished."""

    def __init__(self, result: Any = None) -> None:
        self._result = result

    def result(self, timeout: float | None = None) -> Any:
        return self._result

    def wait(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True


def not_found(what: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(message=f"{what} was not found")


def no_version(what: str) -> ValidationException:
    """What azure-ai-ml raises (not a 404) when a label names no active version."""
    return ValidationException(
        message=f"{what}: no active version",
        no_personal_data_message="no active version",
        error_type=ValidationErrorType.RESOURCE_NOT_FOUND,
        target=ErrorTarget.MODEL,
    )


def _http_error(status: int, message: str) -> HttpResponseError:
    error = HttpResponseError(message=message)
    error.status_code = status
    return error


class FakeAzureML:
    """The whole fake service; `workspace` and `registry` stand for the two MLClients."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.clock = itertools.count(1)
        self.started = datetime.now(UTC) - timedelta(hours=3)
        self.workspace = SimpleNamespace(
            workspace_name=WORKSPACE,
            jobs=FakeJobs(self),
            models=FakeModels(self),
            online_endpoints=FakeEndpoints(self),
            online_deployments=FakeDeployments(self),
            compute=FakeCompute(self),
            workspaces=FakeWorkspaces(self),
        )
        self.registry = SimpleNamespace(models=FakeRegistryModels(self), components=FakeComponents(self))
        self.metrics = FakeMetrics(self)
        self.credential = FakeCredential(self)
        self.scoring = ScoringServer(self)
        # knobs
        self.job_script: tuple[str, ...] = JOB_SCRIPT
        self.deployment_outcome = "Succeeded"  # what a deployment becomes after "Creating"
        self.silent_deployments: set[str] = set()  # deployments that answer with an empty text
        self.finetune_metrics = {"loss": [(10, 1.9), (20, 1.4), (30, 1.1)], "eval_loss": 1.05, "train_loss": 1.3}

    def record(self, operation: str, subject: str) -> None:
        with self.lock:
            self.calls.append((operation, subject))

    def count(self, operation: str) -> int:
        return sum(1 for op, _ in self.calls if op == operation)

    def now(self) -> datetime:
        """Creation times: three hours ago, a second apart (old enough to be past any grace period)."""
        return self.started + timedelta(seconds=next(self.clock))

    def close(self) -> None:
        self.scoring.close()

    def tracking_get(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        """MLflow's REST API on the workspace's tracking server."""
        assert headers.get("Authorization") == f"Bearer {FakeCredential.TOKEN}", "the token goes with every call"
        parsed = urllib.parse.urlparse(url)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        self.record("mlflow." + parsed.path.rsplit("/", 2)[-2] + "/" + parsed.path.rsplit("/", 1)[-1], query["run_id"])
        metrics = self.workspace.jobs.step_metrics.get(query["run_id"])
        if metrics is None:
            raise ValueError(f"no MLflow run {query['run_id']}")
        if parsed.path.endswith("/runs/get"):
            latest = [{"key": key, "value": value} for key, value in metrics.items() if not isinstance(value, list)]
            latest.append({"key": "loss", "value": metrics["loss"][-1][1]})
            return {"run": {"info": {"run_id": query["run_id"]}, "data": {"metrics": latest}}}
        assert query["metric_key"] == "loss"
        return {"metrics": [{"key": "loss", "value": v, "step": s} for s, v in metrics["loss"]]}


class FakeJobs:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.jobs: dict[str, SimpleNamespace] = {}
        self.bodies: dict[str, dict[str, Any]] = {}  # the REST body of each submitted job
        self.children: dict[str, list[SimpleNamespace]] = defaultdict(list)
        self.step_metrics: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, int] = {}

    def get(self, name: str) -> SimpleNamespace:
        self.service.record("jobs.get", name)
        with self.service.lock:
            job = self.jobs.get(name)
            if job is None:
                raise not_found(f"job {name}")
            if job.status not in ("Completed", "Failed", "Canceled"):
                step = min(self._progress[name] + 1, len(self.service.job_script) - 1)
                self._progress[name] = step
                job.status = self.service.job_script[step]
            return copy.copy(job)

    def create_or_update(self, job: Any, *, experiment_name: str | None = None, **_: Any) -> SimpleNamespace:
        self.service.record("jobs.create_or_update", job.name)
        with self.service.lock:
            if job.name in self.jobs:
                raise _http_error(400, f"A job with this ID already exists: {job.name}")
            self.bodies[job.name] = job_request_body(job)
            stored = SimpleNamespace(
                name=job.name,
                display_name=job.display_name,
                experiment_name=experiment_name,
                type="pipeline",
                status=self.service.job_script[0],
                tags=dict(job.tags),
                creation_context=SimpleNamespace(created_at=self.service.now()),
                studio_url=f"https://ml.azure.com/runs/{job.name}",
            )
            self.jobs[job.name] = stored
            self._progress[job.name] = 0
            node = SimpleNamespace(name=f"{job.name}_p", display_name="chat_completion_pipeline", type="pipeline")
            step = SimpleNamespace(name=f"{job.name}_f", display_name="chat_completion_finetune", type="command")
            importer = SimpleNamespace(name=f"{job.name}_i", display_name="model_import", type="command")
            self.children[job.name] = [node]
            self.children[node.name] = [importer, step]
            self.step_metrics[step.name] = copy.deepcopy(self.service.finetune_metrics)
            return copy.copy(stored)

    def begin_cancel(self, name: str) -> Poller:
        self.service.record("jobs.begin_cancel", name)
        with self.service.lock:
            if name not in self.jobs:
                raise not_found(f"job {name}")
            self.jobs[name].status = "Canceled"
        return Poller()

    def list(self, *, parent_job_name: str | None = None, **_: Any) -> list[SimpleNamespace]:
        self.service.record("jobs.list", parent_job_name or "")
        return list(self.children.get(parent_job_name or "", []))


class FakeModels:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.models: dict[tuple[str, str], Any] = {}

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Any:
        self.service.record("models.get", f"{name}:{version or label}")
        with self.service.lock:
            versions = [m for (n, _), m in self.models.items() if n == name]
            if version is not None:
                found = self.models.get((name, str(version)))
            else:
                found = max(versions, key=lambda m: m.creation_context.created_at) if versions else None
            if found is None:
                raise not_found(f"model {name}:{version}") if version is not None else no_version(f"model {name}")
            return copy.deepcopy(found)

    def list(self, name: str | None = None, **_: Any) -> list[Any]:
        self.service.record("models.list", name or "")
        with self.service.lock:
            return [copy.deepcopy(m) for (n, _), m in self.models.items() if name in (None, n)]

    def create_or_update(self, model: Any) -> Any:
        self.service.record("models.create_or_update", f"{model.name}:{model.version}")
        with self.service.lock:
            key = (model.name, str(model.version))
            stored = copy.deepcopy(model)
            previous = self.models.get(key)
            if previous is not None and previous.path != stored.path:
                raise _http_error(409, f"model {key} already exists with another path; only tags may change")
            stored._creation_context = (
                previous.creation_context if previous else SimpleNamespace(created_at=self.service.now())
            )
            self.models[key] = stored
            return copy.deepcopy(stored)


class FakeEndpoints:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.endpoints: dict[str, Any] = {}
        self.keys: dict[str, SimpleNamespace] = {}

    def get(self, name: str) -> Any:
        self.service.record("online_endpoints.get", name)
        with self.service.lock:
            if name not in self.endpoints:
                raise not_found(f"endpoint {name}")
            return copy.deepcopy(self.endpoints[name])

    def list(self) -> list[Any]:
        self.service.record("online_endpoints.list", "")
        with self.service.lock:
            return [copy.deepcopy(e) for e in self.endpoints.values()]

    def begin_create_or_update(self, endpoint: Any) -> Poller:
        self.service.record("online_endpoints.begin_create_or_update", endpoint.name)
        with self.service.lock:
            deployments = self.service.workspace.online_deployments.of(endpoint.name)
            traffic = {name.lower(): weight for name, weight in (endpoint.traffic or {}).items() if weight}
            unknown = set(traffic) - set(deployments)
            if unknown or sum(traffic.values()) not in (0, 100):
                raise _http_error(400, f"invalid traffic {traffic} for deployments {sorted(deployments)}")
            stored = copy.deepcopy(endpoint)
            previous = self.endpoints.get(endpoint.name)
            # read-only properties on the SDK entities: the service fills them in
            stored._provisioning_state = "Succeeded"
            stored._scoring_uri = f"{self.service.scoring.url}/{endpoint.name}/score"
            stored._id = f"{WORKSPACE_ID}/onlineEndpoints/{endpoint.name}"
            stored.traffic = traffic
            created = previous.properties["createdAt"] if previous else self.service.now().isoformat()
            stored.properties = {**(stored.properties or {}), "createdAt": created}
            self.endpoints[endpoint.name] = stored
            self.keys.setdefault(
                endpoint.name, SimpleNamespace(primary_key=f"pk-{endpoint.name}", secondary_key=f"sk-{endpoint.name}")
            )
            return Poller(copy.deepcopy(stored))

    def get_keys(self, name: str) -> SimpleNamespace:
        self.service.record("online_endpoints.get_keys", name)
        with self.service.lock:
            if name not in self.keys:
                raise not_found(f"endpoint {name}")
            return self.keys[name]

    def begin_delete(self, name: str) -> Poller:
        self.service.record("online_endpoints.begin_delete", name)
        with self.service.lock:
            if self.endpoints.pop(name, None) is None:
                raise not_found(f"endpoint {name}")
            self.keys.pop(name, None)
            self.service.workspace.online_deployments.deployments.pop(name, None)
        return Poller()


class FakeDeployments:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.deployments: dict[str, dict[str, Any]] = defaultdict(dict)
        self._looked_at: set[tuple[str, str]] = set()

    def of(self, endpoint_name: str) -> dict[str, Any]:
        return self.deployments.get(endpoint_name, {})

    def begin_create_or_update(self, deployment: Any) -> Poller:
        self.service.record("online_deployments.begin_create_or_update", deployment.name)
        with self.service.lock:
            endpoint = self.service.workspace.online_endpoints.endpoints.get(deployment.endpoint_name)
            if endpoint is None:
                raise not_found(f"endpoint {deployment.endpoint_name}")
            stored = copy.deepcopy(deployment)
            stored._provisioning_state = "Creating"
            self.deployments[deployment.endpoint_name][deployment.name] = stored
            return Poller(copy.deepcopy(stored))

    def list(self, endpoint_name: str, **_: Any) -> list[Any]:
        self.service.record("online_deployments.list", endpoint_name)
        with self.service.lock:
            return [copy.deepcopy(d) for d in self.of(endpoint_name).values()]

    def get(self, name: str, endpoint_name: str) -> Any:
        self.service.record("online_deployments.get", name)
        with self.service.lock:
            deployment = self.of(endpoint_name).get(name)
            if deployment is None:
                raise not_found(f"deployment {name} of {endpoint_name}")
            if deployment.provisioning_state == "Creating":  # still provisioning at the first look, done at the next
                if (endpoint_name, name) in self._looked_at:
                    deployment._provisioning_state = self.service.deployment_outcome
                self._looked_at.add((endpoint_name, name))
            return copy.deepcopy(deployment)

    def get_logs(self, name: str, endpoint_name: str, lines: int, **_: Any) -> str:
        self.service.record("online_deployments.get_logs", name)
        return f"Liveness probe failed: container of {name} exited with code 137 (out of memory); last {lines} lines"

    def begin_delete(self, name: str, endpoint_name: str) -> Poller:
        self.service.record("online_deployments.begin_delete", name)
        with self.service.lock:
            if name not in self.of(endpoint_name):
                raise not_found(f"deployment {name} of {endpoint_name}")
            endpoint = self.service.workspace.online_endpoints.endpoints[endpoint_name]
            if endpoint.traffic.get(name, 0) > 0:
                raise _http_error(400, f"deployment {name} has {endpoint.traffic[name]}% traffic; shift it first")
            del self.deployments[endpoint_name][name]
            endpoint.traffic = {k: v for k, v in endpoint.traffic.items() if k != name}
        return Poller()


class FakeCompute:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.clusters = {
            "gpu-a100": SimpleNamespace(
                name="gpu-a100", size="Standard_NC24ads_A100_v4", provisioning_state="Succeeded"
            ),
            "gpu-k80": SimpleNamespace(name="gpu-k80", size="Standard_NC6", provisioning_state="Succeeded"),
            "gpu-broken": SimpleNamespace(name="gpu-broken", size="Standard_ND96asr_v4", provisioning_state="Failed"),
        }

    def get(self, name: str) -> SimpleNamespace:
        self.service.record("compute.get", name)
        if name not in self.clusters:
            raise not_found(f"compute {name}")
        return self.clusters[name]

    def list_sizes(self, **_: Any) -> list[SimpleNamespace]:
        self.service.record("compute.list_sizes", "")
        return [SimpleNamespace(name=name, gpus=gpus) for name, gpus in VM_SIZES.items()]


class FakeWorkspaces:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service

    def get(self, name: str | None = None) -> SimpleNamespace:
        self.service.record("workspaces.get", name or "")
        return SimpleNamespace(
            name=WORKSPACE,
            location="eastus",
            mlflow_tracking_uri=f"azureml://eastus.api.azureml.ms/mlflow/v1.0{WORKSPACE_ID}",
        )


class FakeRegistryModels:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.archived = False
        self.present = True

    def get(self, name: str, version: str | None = None, label: str | None = None) -> SimpleNamespace:
        self.service.record("registry.models.get", f"{name}:{version or label}")
        if not self.present or name != "Phi-3-mini-4k-instruct" or version not in (None, "15"):
            raise not_found(f"model {name}:{version}") if version is not None else no_version(f"model {name}")
        return SimpleNamespace(
            id=f"azureml://registries/azureml/models/{name}/versions/15",
            name=name,
            version="15",
            tags={
                "model_specific_defaults": PHI3_DEFAULTS,
                "task": "chat-completion",
                "inference_compute_allow_list": str(INFERENCE_SIZES),
            },
            _system_metadata={"finetune_compute_allow_list": FINETUNE_SIZES},
            properties={},
            stage="Archived" if self.archived else "Active",
        )


class FakeComponents:
    def __init__(self, service: FakeAzureML) -> None:
        self.service = service

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Any:
        self.service.record("registry.components.get", f"{name}:{version or label}")
        return load_offline_component("azureml", version or "0.0.82")


class FakeMetrics:
    """Azure Monitor's RequestsPerMinute, from the requests the scoring server actually received."""

    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.unavailable = False

    def query_resources(self, *, resource_ids: list[str], metric_names: list[str], **_: Any) -> list[Any]:
        self.service.record("metrics.query_resources", ",".join(resource_ids))
        if self.unavailable:
            raise _http_error(503, "Azure Monitor is unavailable")
        assert metric_names == ["RequestsPerMinute"]
        results = []
        for resource_id in resource_ids:
            name = resource_id.rsplit("/", 1)[-1]
            points = [
                SimpleNamespace(timestamp=at.replace(second=0, microsecond=0), total=1.0)
                for at in self.service.scoring.requests.get(name, [])
            ]
            series = [SimpleNamespace(data=points)] if points else []  # no requests: no data at all
            results.append(SimpleNamespace(metrics=[SimpleNamespace(name=metric_names[0], timeseries=series)]))
        return results


class FakeCredential:
    TOKEN = "fake-token"

    def __init__(self, service: FakeAzureML) -> None:
        self.service = service

    def get_token(self, *scopes: str, **_: Any) -> SimpleNamespace:
        self.service.record("credential.get_token", " ".join(scopes))
        return SimpleNamespace(token=self.TOKEN, expires_on=0)


class ScoringServer:
    """Every endpoint's scoring URI: POST /<endpoint>/score with the key, answered by the deployment the header
    pins or the one with all the traffic, in the generic MLflow scorer's shape [{"0": text}]."""

    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.requests: dict[str, list[datetime]] = defaultdict(list)
        self.pinned: list[str | None] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Started on first use, bound to loopback."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                endpoint_name = self.path.strip("/").split("/")[0]
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, answer = server.answer(endpoint_name, self.headers, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def answer(self, endpoint_name: str, headers: Any, body: dict[str, Any]) -> tuple[int, Any]:
        service = self.service
        with service.lock:
            keys = service.workspace.online_endpoints.keys.get(endpoint_name)
            endpoint = service.workspace.online_endpoints.endpoints.get(endpoint_name)
            if endpoint is None or keys is None:
                return 404, {"message": "no such endpoint"}
            if headers.get("Authorization") not in (f"Bearer {keys.primary_key}", f"Bearer {keys.secondary_key}"):
                return 401, {"message": "invalid key"}
            if not isinstance(body.get("input_data", {}).get("input_string"), list):
                return 400, {"message": "input_data.input_string must be a list"}
            pinned = headers.get("azureml-model-deployment")
            serving = pinned or max(endpoint.traffic, key=endpoint.traffic.get, default=None)
            deployment = service.workspace.online_deployments.of(endpoint_name).get(serving or "")
            if deployment is None or (not pinned and endpoint.traffic.get(serving, 0) == 0):
                return 404, {"message": "no deployment to route to"}
            self.pinned.append(pinned)
            self.requests[endpoint_name].append(datetime.now(UTC))
            text = "" if serving in service.silent_deployments else f"Hello from {serving}."
            return 200, [{"0": text}]
