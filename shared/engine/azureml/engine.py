"""The Engine port over azure-ai-ml: chat_completion_pipeline jobs, the model registry, managed online endpoints.

Every operation goes through the workspace and registry clients given to the constructor (`connect` builds the
real ones with DefaultAzureCredential; tests give a recording fake). Creates are get-before-create, so a redelivered
event never makes a second job, model version or deployment. Long operations: endpoint creation and traffic
updates are waited for (a minute or two); a deployment (ten minutes or more for an LLM) is begun and left running,
and the lifecycle polls `get_deployment` from the idle sweep until it has succeeded or failed.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from shared.domain.errors import EngineError, EngineNotConfigured
from shared.domain.jobs import JobStatus, from_azure
from shared.domain.tags import RUN_TAG
from shared.engine.azureml.config import SERVING_SIZE_TAG, AzureMLConfig, run_pipeline_spec
from shared.engine.azureml.foundation import (
    BaseModelRef,
    BaseModelUnavailable,
    ComputeNotUsable,
    check_cluster_state,
    check_compute_size,
    gpus_per_node,
    inference_size,
    parse_base_model_id,
    serving_size_warning,
)
from shared.engine.azureml.model_card import FoundationModel, check_fine_tunable, from_registry_body
from shared.engine.azureml.monitoring import EndpointActivity, LazyMetricsClient, MetricsQuery, endpoint_activity
from shared.engine.azureml.pipeline import (
    COMPONENT_NAME,
    SERVERLESS,
    TRAINED_MODEL_OUTPUT,
    FinetuneCompute,
    PipelineJobSpec,
    build_pipeline_job,
)
from shared.engine.azureml.registry import registry_model_body
from shared.engine.azureml.sdk_errors import translate, translated
from shared.engine.azureml.tracking import (
    TRACKING_SCOPE,
    HttpGet,
    finetune_step,
    http_get_json,
    read_job_metrics,
    rest_base,
)
from shared.engine.base import (
    DeploymentInfo,
    EndpointInfo,
    EndpointKeys,
    JobInfo,
    JobMetrics,
    JobSpec,
    JobWarning,
    ModelRef,
)

logger = logging.getLogger(__name__)

ALIAS_TAG = "ft-autopilot-alias"  # Azure ML models have no aliases: the app keeps its own as a tag
CREATED_AT_TAG = "ft-autopilot-created-at"
LIVENESS_INITIAL_DELAY_S = 600  # an LLM container loads for minutes before it answers probes
REQUEST_TIMEOUT_MS = 90_000
SCORING_TIMEOUT_S = 120


HttpPost = Callable[[str, bytes, dict[str, str], float], Any]


def http_post_json(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")


class AzureMLEngine:
    name = "azureml"

    def __init__(
        self,
        config: AzureMLConfig,
        workspace: Any,
        registry: Any,
        *,
        credential: Any = None,
        metrics: MetricsQuery | None = None,
        http_post: HttpPost = http_post_json,
        tracking_get: HttpGet = http_get_json,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self._workspace = workspace
        self._registry = registry
        self._credential = credential
        self._metrics = metrics
        self._http_post = http_post
        self._tracking_get = tracking_get
        self._now = now
        self._component: Any = None
        self._foundation: FoundationModel | None = None

    @classmethod
    def connect(cls, config: AzureMLConfig) -> AzureMLEngine:
        """The real clients: a workspace MLClient and a registry MLClient over DefaultAzureCredential (the managed
        identity in Azure, AZURE_CLIENT_ID naming a user-assigned one), and an Azure Monitor metrics client."""
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        with translated(f"connect to workspace {config.workspace_name} and registry {config.registry_name}"):
            credential = DefaultAzureCredential(managed_identity_client_id=config.client_id)
            workspace = MLClient(
                credential,
                subscription_id=config.subscription_id,
                resource_group_name=config.resource_group,
                workspace_name=config.workspace_name,
            )
            registry = MLClient(credential, registry_name=config.registry_name)  # discovers the registry: network
        metrics = LazyMetricsClient(workspace, credential)
        return cls(config, workspace, registry, credential=credential, metrics=metrics)

    # -- jobs -----------------------------------------------------------------------------------------

    def submit_job(self, spec: JobSpec) -> JobInfo:
        existing = self._get_or_none(lambda: self._workspace.jobs.get(spec.run_id), f"get job {spec.run_id}")
        if existing is not None:
            return self._job_info(existing)
        model = self.foundation_model()
        notes = check_fine_tunable(model, self._now())
        pipeline_spec = self.pipeline_job_spec(spec, model)
        job = build_pipeline_job(self._pipeline_component(), pipeline_spec)
        dropped = pipeline_spec.dropped_defaults_warning(self.config.pipeline_version)
        warnings = [JobWarning("base_model_deprecated", note) for note in notes]
        if dropped:
            warnings.append(JobWarning("model_defaults_dropped", dropped))
        retiring = serving_size_warning(self.config.inference_instance_type)
        if retiring:
            warnings.append(JobWarning("serving_size_retiring", retiring))
        try:
            created = self._workspace.jobs.create_or_update(job, experiment_name=self.config.experiment_name)
        except Exception as exc:
            error = translate(exc, f"submit job {spec.run_id}")
            if error.code != "azureml_already_exists":
                raise error from exc
            created = self._workspace.jobs.get(spec.run_id)  # a concurrent delivery submitted it first
        logger.info("run %s: submitted pipeline job %s", spec.run_id, created.name, extra={"run_id": spec.run_id})
        return replace(self._job_info(created), warnings=tuple(warnings))

    def pipeline_job_spec(self, spec: JobSpec, model: FoundationModel) -> PipelineJobSpec:
        """The job this run submits: the base model's defaults and the compute resolved against the service, and the
        serving size (a size the model cannot be served on would only show after hours of training)."""
        return run_pipeline_spec(
            self.config,
            spec,
            model_name=model.name,
            model_id=model.id,
            model_defaults=model.finetune_defaults,
            component_inputs=list(self._pipeline_component().inputs),
            compute=self.finetune_compute(model),
            serving_size=inference_size(self.config.inference_instance_type, model.inference_allow_list),
        )

    def foundation_model(self) -> FoundationModel:
        """The base model as the registry serves it now: its REST body, which keeps what the SDK's Model drops
        (isArchived, the system metadata with the compute lists and retirement dates). Read afresh for every
        submission: a model can be archived at any time."""
        ref: BaseModelRef = parse_base_model_id(self.config.base_model_id, self.config.registry_name)
        if ref.registry != self.config.registry_name:
            raise EngineNotConfigured(
                f"BASE_MODEL_ID is in registry {ref.registry}, but AZUREML_REGISTRY_NAME is {self.config.registry_name}"
            )
        action = f"get base model {ref.asset_id} (BASE_MODEL_ID)"
        version = ref.version
        if version is None:  # a label: the SDK resolves it to a version
            resolved = self._get_or_none(lambda: self._registry.models.get(ref.name, label=ref.label), action)
            version = str(resolved.version) if resolved is not None else None
        body = None
        if version is not None:
            body = self._get_or_none(lambda: registry_model_body(self._registry, ref.name, version), action)
        if body is None:
            raise BaseModelUnavailable(
                f"BASE_MODEL_ID: {ref.asset_id} is not in registry {ref.registry} (archived models, such as "
                "Phi-3-mini-4k-instruct since 2025-08-30, may no longer be listed): set BASE_MODEL_ID to a model "
                "the registry offers for chat-completion fine-tuning"
            )
        self._foundation = from_registry_body(body, registry=ref.registry, name=ref.name)
        return self._foundation

    def serving_size(self, model: ModelRef) -> str:
        """AZUREML_INFERENCE_INSTANCE_TYPE, or the size chosen for the model's run at submission (its tag); a model
        registered before the tag existed falls back to the current base model's inference list."""
        if self.config.inference_instance_type:
            return self.config.inference_instance_type
        tags = model.tags or {}
        if SERVING_SIZE_TAG not in tags:
            registered = self.get_model(model.name, version=model.version)
            tags = registered.tags if registered is not None else {}
        if tags.get(SERVING_SIZE_TAG):
            return tags[SERVING_SIZE_TAG]
        return inference_size(None, (self._foundation or self.foundation_model()).inference_allow_list)

    def finetune_compute(self, model: FoundationModel) -> FinetuneCompute:
        """The notebook's checks: the cluster exists and has not failed, its size is allowed, and its GPUs per node
        are read from the workspace's VM sizes. Serverless checks the instance type the same way."""
        config = self.config
        if config.compute.lower() == SERVERLESS:
            size, name = config.finetune_instance_type, SERVERLESS
        else:
            cluster = self._get_or_none(lambda: self._workspace.compute.get(config.compute), "get compute")
            if cluster is None:
                raise ComputeNotUsable(f"compute {config.compute} (AZUREML_COMPUTE) does not exist in the workspace")
            check_cluster_state(config.compute, state_text(getattr(cluster, "provisioning_state", None)))
            size, name = cluster.size, config.compute
        check_compute_size(size, model.finetune_allow_list)
        with translated("list the workspace's VM sizes"):
            sizes = [(s.name, getattr(s, "gpus", None)) for s in self._workspace.compute.list_sizes()]
        return FinetuneCompute(
            name=name,
            gpus_per_node=gpus_per_node(size, sizes),
            instance_type=size if name == SERVERLESS else None,
        )

    def get_job(self, name: str) -> JobInfo:
        job = self._get_or_none(lambda: self._workspace.jobs.get(name), f"get job {name}")
        if job is None:
            raise EngineError(f"no job named {name} in the workspace", code="job_not_found", transient=False)
        return self._job_info(job)

    def cancel_job(self, name: str) -> JobInfo:
        job = self.get_job(name)
        if job.status.is_terminal:
            return job
        with translated(f"cancel job {name}"):
            self._workspace.jobs.begin_cancel(name)
        return JobInfo(name=name, status=JobStatus.CANCELED, created_at=job.created_at, tags=job.tags)

    def job_metrics(self, name: str) -> JobMetrics:
        step = finetune_step(self._descendants(name))
        if step is None:
            raise EngineError(
                f"job {name} has no finetune step to read metrics from", code="metrics_not_found", transient=False
            )
        with translated("find the workspace's MLflow tracking URI"):
            workspace = self._workspace.workspaces.get(self.config.workspace_name)
            token = self._credential.get_token(TRACKING_SCOPE).token if self._credential else ""
        try:
            return read_job_metrics(rest_base(workspace.mlflow_tracking_uri), step.name, token, self._tracking_get)
        except (urllib.error.URLError, TimeoutError, ValueError, KeyError) as exc:
            raise EngineError(
                f"read the metrics of job {name} (step {step.name}): {exc}", code="metrics_unavailable"
            ) from exc

    def _descendants(self, name: str, depth: int = 3) -> Iterable[Any]:
        """Child jobs, depth first: the finetune step sits inside the chat_completion_pipeline node."""
        if depth == 0:
            return
        with translated(f"list the steps of job {name}"):
            children = list(self._workspace.jobs.list(parent_job_name=name))
        for child in children:
            yield child
            yield from self._descendants(child.name, depth - 1)

    def _job_info(self, job: Any) -> JobInfo:
        raw = state_text(getattr(job, "status", None))
        status = from_azure(raw) or JobStatus.RUNNING  # a word not known yet: still running, never over
        error = None
        if status in (JobStatus.FAILED, JobStatus.CANCELED):
            error = f"pipeline job {raw}; see its logs in Azure ML studio: {getattr(job, 'studio_url', None)}"
        context = getattr(job, "creation_context", None)
        return JobInfo(
            name=job.name,
            status=status,
            created_at=getattr(context, "created_at", None),
            error=error,
            tags=dict(getattr(job, "tags", None) or {}),
        )

    def _pipeline_component(self) -> Any:
        if self._component is None:
            version = self.config.pipeline_version
            with translated(f"get component {COMPONENT_NAME} version {version} from {self.config.registry_name}"):
                self._component = self._registry.components.get(name=COMPONENT_NAME, version=version)
        return self._component

    # -- models ---------------------------------------------------------------------------------------

    def register_model(self, job_name: str, model_name: str, tags: Mapping[str, str]) -> ModelRef:
        """The job's trained_model output as an MLflow model; the version is derived from the run id, so a second
        registration of the same run finds the first."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        version = model_version_for(job_name)
        existing = self.get_model(model_name, version=version)
        if existing is not None:
            return existing
        job_tags = self.get_job(job_name).tags
        serving = {SERVING_SIZE_TAG: job_tags[SERVING_SIZE_TAG]} if SERVING_SIZE_TAG in job_tags else {}
        model = Model(
            name=model_name,
            version=version,
            type=AssetTypes.MLFLOW_MODEL,
            path=f"azureml://jobs/{job_name}/outputs/{TRAINED_MODEL_OUTPUT}",
            description=f"{model_name}: fine-tuned by ft-autopilot run {job_name} (chat completion)",
            tags={**tags, **serving, RUN_TAG: tags.get(RUN_TAG, job_name)},
        )
        try:
            created = self._workspace.models.create_or_update(model)
        except Exception as exc:
            error = translate(exc, f"register model {model_name} version {version}")
            if error.code != "azureml_already_exists":
                raise error from exc
            created = self._workspace.models.get(model_name, version=version)
        return _model_ref(created)

    def get_model(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None:
        models = self._workspace.models
        if alias is not None:
            listed = self._get_or_none(lambda: list(models.list(name=name)), f"list versions of model {name}")
            tagged = [m for m in listed or () if (m.tags or {}).get(ALIAS_TAG) == alias]
            return _model_ref(max(tagged, key=_newest_first)) if tagged else None
        action = f"get model {name}" + (f" version {version}" if version else "")
        found = self._get_or_none(
            lambda: models.get(name, version=version) if version else models.get(name, label="latest"), action
        )
        return _model_ref(found) if found is not None else None

    def set_model_alias(self, model: ModelRef, alias: str) -> None:
        """Tag the version with the alias, and take the tag off any other version that had it."""
        models = self._workspace.models
        with translated(f"set alias {alias} on model {model.name} version {model.version}"):
            for other in models.list(name=model.name):
                if (other.tags or {}).get(ALIAS_TAG) == alias and str(other.version) != model.version:
                    other.tags.pop(ALIAS_TAG)
                    models.create_or_update(other)
            target = models.get(model.name, version=model.version)
            if (target.tags or {}).get(ALIAS_TAG) != alias:
                target.tags = {**(target.tags or {}), ALIAS_TAG: alias}
                models.create_or_update(target)

    # -- endpoints and deployments --------------------------------------------------------------------

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        """One key-authenticated managed online endpoint, created once (and waited for: a minute or two)."""
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoints = self._workspace.online_endpoints
        existing = self._get_or_none(lambda: endpoints.get(name), f"get endpoint {name}")
        if existing is not None and state_text(existing.provisioning_state).lower() == "deleting":
            raise EngineError(f"endpoint {name} is still being deleted; retried later", code="endpoint_busy")
        if existing is not None:
            return self._endpoint_info(existing)
        endpoint = ManagedOnlineEndpoint(
            name=name,
            auth_mode="key",
            description=f"ft-autopilot: {tags.get('model', name)}, fine-tuned for chat completion",
            tags={**tags, CREATED_AT_TAG: self._now().isoformat()},
        )
        with translated(f"create endpoint {name}"):
            created = endpoints.begin_create_or_update(endpoint).result()
        logger.info("created endpoint %s", name)
        return self._endpoint_info(created)

    def create_deployment(self, endpoint_name: str, deployment_name: str, model: ModelRef) -> DeploymentInfo:
        """Begin a deployment at 0% traffic and return while Azure provisions it (it reports `Creating`)."""
        from azure.ai.ml.entities import ManagedOnlineDeployment, OnlineRequestSettings, ProbeSettings

        deployments = self._workspace.online_deployments
        existing = self.get_deployment(endpoint_name, deployment_name)
        if existing is not None:
            return existing
        deployment = ManagedOnlineDeployment(
            name=deployment_name,
            endpoint_name=endpoint_name,
            model=f"azureml:{model.name}:{model.version}",
            instance_type=self.serving_size(model),
            instance_count=1,
            liveness_probe=ProbeSettings(initial_delay=LIVENESS_INITIAL_DELAY_S),
            request_settings=OnlineRequestSettings(request_timeout_ms=REQUEST_TIMEOUT_MS),
            tags={"model": model.name, "model_version": model.version},
        )
        with translated(f"create deployment {deployment_name} on {endpoint_name}"):
            deployments.begin_create_or_update(deployment)
        logger.info("began deployment %s of %s:%s on %s", deployment_name, model.name, model.version, endpoint_name)
        return DeploymentInfo(name=deployment_name, endpoint_name=endpoint_name, model=model, state="Creating")

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        found = self._get_or_none(
            lambda: self._workspace.online_deployments.get(deployment_name, endpoint_name),
            f"get deployment {deployment_name} of {endpoint_name}",
        )
        if found is None:
            return None
        tags = found.tags or {}
        model = ModelRef(name=tags.get("model", str(found.model)), version=tags.get("model_version", ""))
        state = state_text(getattr(found, "provisioning_state", None)) or "Creating"
        return DeploymentInfo(name=deployment_name, endpoint_name=endpoint_name, model=model, state=state)

    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str:
        with translated(f"get the logs of deployment {deployment_name} on {endpoint_name}"):
            return self._workspace.online_deployments.get_logs(deployment_name, endpoint_name, lines)

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        endpoints = self._workspace.online_endpoints
        with translated(f"set traffic {dict(traffic)} on {endpoint_name}"):
            endpoint = endpoints.get(endpoint_name)
            endpoint.traffic = dict(traffic)
            updated = endpoints.begin_create_or_update(endpoint).result()
        return self._endpoint_info(updated)

    def get_keys(self, endpoint_name: str) -> EndpointKeys:
        with translated(f"get the keys of endpoint {endpoint_name}"):
            keys = self._workspace.online_endpoints.get_keys(endpoint_name)
        return EndpointKeys(primary=keys.primary_key, secondary=keys.secondary_key)

    def invoke(
        self,
        endpoint_name: str,
        request: Mapping[str, Any],
        deployment_name: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """POST the request to the scoring URI with the endpoint key (the SDK's invoke wants a file). The timeout
        bounds the connection and each read of the answer (default SCORING_TIMEOUT_S)."""
        timeout = timeout_s if timeout_s is not None else SCORING_TIMEOUT_S
        with translated(f"get endpoint {endpoint_name}"):
            scoring_uri = self._workspace.online_endpoints.get(endpoint_name).scoring_uri
        key = self.get_keys(endpoint_name).primary
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        if deployment_name:
            headers["azureml-model-deployment"] = deployment_name
        try:
            return self._http_post(scoring_uri, json.dumps(request).encode(), headers, timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            if 400 <= exc.code < 500 and exc.code != 429:
                raise EngineError(
                    f"{endpoint_name} refused the request: HTTP {exc.code} {detail}",
                    code="scoring_rejected",
                    transient=False,
                ) from exc
            raise EngineError(f"{endpoint_name}: HTTP {exc.code} {detail}", code="scoring_unavailable") from exc
        except (TimeoutError, urllib.error.URLError) as exc:
            if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
                raise EngineError(
                    f"{endpoint_name} did not answer within {timeout:g} s", code="scoring_timeout"
                ) from exc
            raise EngineError(f"{endpoint_name} did not answer: {exc}", code="scoring_unavailable") from exc
        except ValueError as exc:
            raise EngineError(f"{endpoint_name} did not answer: {exc}", code="scoring_unavailable") from exc

    def list_endpoints(self) -> list[EndpointInfo]:
        with translated("list endpoints"):
            endpoints = list(self._workspace.online_endpoints.list())
        return [self._endpoint_info(endpoint, with_activity=True) for endpoint in endpoints]

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        """Begin the deletion; gone already is fine. Azure refuses to delete a deployment that has traffic, so one
        serving all of it is first set to 0% (as the local engine does implicitly)."""
        endpoint = self._get_or_none(
            lambda: self._workspace.online_endpoints.get(endpoint_name), f"get endpoint {endpoint_name}"
        )
        if endpoint is None:
            return
        traffic = dict(endpoint.traffic or {})
        if traffic.get(deployment_name, 0) > 0:
            remaining = {name: weight for name, weight in traffic.items() if name != deployment_name}
            if sum(remaining.values()) not in (0, 100):
                raise EngineError(
                    f"deployment {deployment_name} of {endpoint_name} serves {traffic[deployment_name]}% of the "
                    "traffic: shift it to the other deployments before deleting it",
                    code="invalid_traffic",
                    transient=False,
                )
            self.set_traffic(endpoint_name, {**remaining, deployment_name: 0})
        self._get_or_none(
            lambda: self._workspace.online_deployments.begin_delete(deployment_name, endpoint_name),
            f"delete deployment {deployment_name} of {endpoint_name}",
        )

    def delete_endpoint(self, name: str) -> None:
        """Begin the deletion of the endpoint and its deployments; registered models stay."""
        self._get_or_none(lambda: self._workspace.online_endpoints.begin_delete(name=name), f"delete endpoint {name}")

    def _endpoint_info(self, endpoint: Any, *, with_activity: bool = False) -> EndpointInfo:
        tags = dict(endpoint.tags or {})
        properties = getattr(endpoint, "properties", None) or {}
        activity = EndpointActivity(requests=0, last_request_at=None)
        info = EndpointInfo(
            name=endpoint.name,
            scoring_uri=endpoint.scoring_uri,
            tags=tags,
            created_at=_parse_time(properties.get("createdAt")) or _parse_time(tags.get(CREATED_AT_TAG)),
            traffic=self._traffic(endpoint),
        )
        if with_activity and info.is_managed:
            activity = self._activity(endpoint)
        return replace(info, request_count=activity.requests, last_request_at=activity.last_request_at)

    def _activity(self, endpoint: Any) -> EndpointActivity:
        """Requests over the idle window. Unknown activity is never taken for idleness: without a metrics client
        or a resource id, or on any error, the endpoint counts as used now."""
        in_use = EndpointActivity(requests=0, last_request_at=self._now())
        if self._metrics is None or not endpoint.id:
            logger.warning("endpoint %s: no request metrics to read; counted as in use", endpoint.name)
            return in_use
        try:
            with translated(f"read the request metrics of endpoint {endpoint.name}"):
                return endpoint_activity(self._metrics, endpoint.id, self.config.idle_window, now=self._now())
        except EngineError as exc:
            logger.warning("endpoint %s: %s; counted as in use", endpoint.name, exc.message)
            return in_use

    def _traffic(self, endpoint: Any) -> dict[str, int]:
        """Every deployment with its weight: the service (and the SDK, before it sends) drops 0% entries from the
        endpoint's traffic, so deployments at 0% are only found by listing them."""
        weights = {name.lower(): int(weight) for name, weight in (endpoint.traffic or {}).items()}
        with translated(f"list the deployments of endpoint {endpoint.name}"):
            names = [d.name for d in self._workspace.online_deployments.list(endpoint.name)]
        return {name: weights.get(name.lower(), 0) for name in sorted(set(names) | set(weights))}

    @staticmethod
    def _get_or_none(operation: Callable[[], Any], action: str) -> Any:
        """The operation's result, or None when what it names does not exist."""
        try:
            return operation()
        except Exception as exc:
            error = translate(exc, action)
            if error.code == "azureml_not_found":
                return None
            raise error from exc


def state_text(value: Any) -> str:
    """A state as the service spells it. The SDK gives some as enums (a deployment's provisioning_state is a
    DeploymentProvisioningState), whose str() is "DeploymentProvisioningState.CREATING", not "Creating"."""
    if value is None:
        return ""
    return str(value.value) if isinstance(value, Enum) else str(value)


def model_version_for(job_name: str) -> str:
    """A registered model version per run: the run id's hex as a number (stable, and a valid version string)."""
    digits = job_name.removeprefix("ft-")
    try:
        return str(int(digits, 16))
    except ValueError:
        return str(int.from_bytes(job_name.encode()[:12], "big"))


def _model_ref(model: Any) -> ModelRef:
    return ModelRef(name=model.name, version=str(model.version), tags=dict(model.tags or {}))


def _newest_first(model: Any) -> tuple[datetime, str]:
    return (_created_at(model) or datetime.min.replace(tzinfo=UTC), str(model.version))


def _created_at(entity: Any) -> datetime | None:
    context = getattr(entity, "creation_context", None)
    return getattr(context, "created_at", None)


def _parse_time(text: str | None) -> datetime | None:
    """An ISO time from a property or tag; one without a zone is UTC, as Azure's system data is."""
    try:
        parsed = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed
