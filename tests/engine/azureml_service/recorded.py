"""Response bodies of the real service, taken from the recorded sessions of azure-ai-ml's own end-to-end tests
(tests/fixtures/recordings/, copied from ../shared/recordings with their provenance and sha256 in its README).

Each builder deep-copies a recorded body and substitutes names, ids, states and times; nothing else is invented.
Where no recording exists (deployments, VM sizes, keys, run-history children, a registry model version), the body
follows the SDK's own REST models and the nearest recorded shape, and says so.
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

RECORDINGS = Path(__file__).resolve().parents[2] / "fixtures" / "recordings"
ENDPOINT_E2E = "azure-ai-ml/test_online_endpoint.pyTestOnlineEndpointtest_online_endpoint_e2e.json"
MODEL_CRUD = "azure-ai-ml/test_model.pyTestModeltest_crud_file.json"
PROMOTE_MODEL = "azure-ai-ml/test_model.pyTestModeltest_promote_model.json"
JOB_SUBMIT = "azure-ai-ml/test_dsl_pipeline.pyTestDSLPipelinetest_component_with_default_optional_input.json"
JOB_CANCEL = "azure-ai-ml/test_dsl_pipeline.pyTestDSLPipelinetest_pipeline_variable_name_uppercase.json"
REGISTRY_JOB_REFUSED = "azure-ai-ml/test_pipeline_job.pyTestPipelineJobtest_pipeline_job_create_with_registries.json"
COMPUTE_CRUD = "azure-ai-ml/test_compute.pyTestComputetest_aml_compute_create_and_delete.json"
PHI3_SPEC = RECORDINGS / "azureml-assets/phi-3-mini-4k-instruct.spec.yaml"  # archived: the walk-through's model
PHI4_SPEC = RECORDINGS.parent / "azureml-assets/phi-4.spec.yaml"  # current: the default base model
COMPONENT_SPEC = RECORDINGS / "azureml-assets/chat_completion_pipeline.spec.yaml"


@functools.cache
def _entries(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((RECORDINGS / name).read_text(encoding="utf-8"))["Entries"])


def _entry(name: str, method: str, path_part: str, status: int) -> dict[str, Any]:
    for entry in _entries(name):
        if entry["RequestMethod"] == method and path_part in entry["RequestUri"] and entry["StatusCode"] == status:
            return copy.deepcopy(entry)
    raise LookupError(f"{name} has no {method} {path_part} answered {status}")


def spec_document(path: Path = PHI4_SPEC) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def iso(moment: datetime) -> str:
    return moment.isoformat()


def iso_to_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text)


def error(code: str, message: str, detail_code: str | None = None) -> dict[str, Any]:
    """The service's error envelope (UserError with a detail code), as the model-not-found answer has it."""
    body = _entry(MODEL_CRUD, "GET", "/versions?", 404)["ResponseBody"]
    body["error"]["code"] = code
    body["error"]["message"] = message
    body["error"]["details"] = [{"code": detail_code or code, "message": message, "details": [], "additionalInfo": []}]
    return body


def bad_request(message: str) -> dict[str, Any]:
    """The 400 the service gives a job it refuses (recorded for a registry component in the wrong region)."""
    body = _entry(REGISTRY_JOB_REFUSED, "PUT", "/jobs/", 400)["ResponseBody"]
    body["error"]["message"] = message
    return body


def workspace(arm_id: str, name: str, location: str) -> dict[str, Any]:
    body = _entry(ENDPOINT_E2E, "GET", "/workspaces/00000?", 200)["ResponseBody"]
    body.update(id=arm_id, name=name, location=location)
    tracking = f"azureml://{location}.api.azureml.ms/mlflow/v1.0{arm_id}"
    body["properties"].update(
        discoveryUrl=f"https://{location}.api.azureml.ms/discovery", mlFlowTrackingUri=tracking, friendlyName=name
    )
    return body


def discovery(location: str) -> dict[str, Any]:
    """The workspace discovery document (no recording: the keys the SDK's service-address lookup reads)."""
    base = f"https://{location}.api.azureml.ms"
    return {key: base for key in ("api", "catalog", "experimentation", "gallery", "history", "hyperdrive", "labeling")}


def registry_discovery(registry: str, subscription: str, resource_group: str, region: str) -> dict[str, Any]:
    body = _entry(PROMOTE_MODEL, "GET", "/discovery", 200)["ResponseBody"]
    body.update(
        registryName=registry,
        subscriptionId=subscription,
        resourceGroup=resource_group,
        primaryRegion=region,
        regions=[region],
        primaryRegionResourceProviderUri=f"https://{region}.api.azureml.ms/",
        registryFqdns={region: {"uri": f"https://{region}.api.azureml.ms"}},
    )
    return body


def compute(arm_id: str, name: str, size: str, state: str, location: str) -> dict[str, Any]:
    body = _entry(COMPUTE_CRUD, "GET", "/computes/", 200)["ResponseBody"]
    body.update(id=arm_id, name=name, location=location)
    body["properties"].update(provisioningState=state, computeLocation=location)
    body["properties"]["properties"]["vmSize"] = size
    return body


def vm_sizes(gpus_by_size: dict[str, int]) -> dict[str, Any]:
    """`GET locations/<l>/vmSizes` (no recording: the SDK's VirtualMachineSize model)."""
    return {
        "value": [
            {
                "name": size,
                "family": "standardNCADSA100v4Family",
                "vCPUs": 24,
                "gpus": gpus,
                "memoryGB": 220.0,
                "lowPriorityCapable": True,
                "premiumIO": True,
                "supportedComputeTypes": ["AmlCompute"],
            }
            for size, gpus in gpus_by_size.items()
        ]
    }


def job(arm_id: str, name: str, request: dict[str, Any], status: str, created: datetime) -> dict[str, Any]:
    """What the service answers a job PUT with, and later GETs of it (status, services, systemData)."""
    body = _entry(JOB_SUBMIT, "PUT", "/jobs/", 201)["ResponseBody"]
    sent = request.get("properties", {})
    body.update(id=arm_id, name=name)
    body["properties"].update({key: value for key, value in sent.items() if key != "isArchived"})
    body["properties"]["status"] = status
    workspace_id = arm_id.split("/jobs/")[0]
    body["properties"]["services"]["Studio"]["endpoint"] = f"https://ml.azure.com/runs/{name}?wsid={workspace_id}"
    body["systemData"]["createdAt"] = iso(created)
    return body


def child_run(run_id: str, display_name: str, parent: str, status: str) -> dict[str, Any]:
    """A step of a pipeline job as run history lists it (no recording: the SDK's runhistory Run model)."""
    return {
        "runId": run_id,
        "displayName": display_name,
        "parentRunId": parent,
        "status": status,
        "runType": "azureml.StepRun",
        "properties": {},
        "tags": {},
    }


def run_error(code: str, message: str, inner_code: str | None = None, component: str | None = None) -> dict[str, Any]:
    """A run's error in run history (no recording: azure-ai-ml 1.35.2's runhistory ErrorResponse and RootError models,
    camelCase as on the wire). `code` is the root category (UserError, SystemError, ...), `inner_code` the specific
    cause, as azureml's error definitions nest them: e.g. SystemError > ClientError, UserError > Memory."""
    return {
        "error": {
            "code": code,
            "severity": None,
            "message": message,
            "messageFormat": None,
            "messageParameters": {},
            "referenceCode": None,
            "detailsUri": None,
            "target": None,
            "details": [],
            "innerError": {"code": inner_code, "innerError": None} if inner_code else None,
            "additionalInfo": None,
        },
        "correlation": {"operation": uuid.uuid4().hex, "request": uuid.uuid4().hex[:16]},
        "environment": "eastus",
        "location": "eastus",
        "time": "2026-07-01T12:00:00+00:00",
        "componentName": component,
    }


def run_details(run_id: str, parent: str | None, status: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """`GET .../runs/<id>/details` (no recording: the SDK's runhistory RunDetails model); `error` is present only on
    a run that failed with one."""
    return {
        "runId": run_id,
        "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, run_id)),
        "parentRunId": parent,
        "status": status,
        "target": "gpu-a100",
        "error": error,
        "warnings": None,
        "tags": {},
        "properties": {},
        "logFiles": {},
    }


def model_version(arm_id: str, version: str, request: dict[str, Any], created: datetime) -> dict[str, Any]:
    body = _entry(MODEL_CRUD, "PUT", "/versions/", 201)["ResponseBody"]
    body.update(id=arm_id, name=version)
    body["properties"].update(request.get("properties", {}))
    body["properties"].setdefault("jobName", None)
    body["systemData"]["createdAt"] = body["systemData"]["lastModifiedAt"] = iso(created)
    return body


def registry_model_version(registry_path: str, spec: dict[str, Any], created: datetime) -> dict[str, Any]:
    """A registry model version built from its azureml-assets spec.yaml (no small recording of a registry model
    GET exists): camelCase under `properties`, `isArchived` beside the inner `properties`, tags as strings (so
    model_specific_defaults becomes a Python literal, as the notebook reads it), and the system metadata."""
    version = str(spec["version"])
    tags = {key: value if isinstance(value, str) else repr(value) for key, value in (spec.get("tags") or {}).items()}
    body = _entry(MODEL_CRUD, "GET", "/versions/", 200)["ResponseBody"]
    body.update(
        id=f"azureml://registries/{registry_name(registry_path)}/models/{spec['name']}/versions/{version}",
        name=version,
        type="Microsoft.MachineLearningServices/registries/models/versions",
    )
    body["properties"].update(
        description=spec.get("description", ""),
        tags=tags,
        properties={},
        isArchived=bool(spec.get("isArchived", False)),
        flavors={},
        modelType="mlflow_model",
        modelUri=f"azureml://registries/azureml/models/{spec['name']}/versions/{version}",
        stage="Archived" if spec.get("isArchived") else "Active",
        systemMetadata=spec.get("system_metadata") or {},
    )
    body["systemData"]["createdAt"] = body["systemData"]["lastModifiedAt"] = iso(created)
    return body


def registry_component(registry_path: str, spec: dict[str, Any], created: datetime) -> dict[str, Any]:
    """A registry component version (no recording of one: the SDK's ComponentVersion model around the real
    spec.yaml of chat_completion_pipeline, which is what the registry stores as componentSpec). Registry assets are
    identified as azureml://registries/..., the form the recorded job PUT sends as a registry node's componentId."""
    version = str(spec["version"])
    return {
        "id": f"azureml://registries/{registry_name(registry_path)}/components/{spec['name']}/versions/{version}",
        "name": version,
        "type": "Microsoft.MachineLearningServices/registries/components/versions",
        "properties": {
            "componentSpec": spec,
            "description": spec.get("description"),
            "properties": {},
            "tags": {},
            "isAnonymous": False,
            "isArchived": False,
            "provisioningState": "Succeeded",
        },
        "systemData": {"createdAt": iso(created), "createdBy": "Sanitized", "createdByType": "User"},
    }


def registry_name(registry_path: str) -> str:
    return registry_path.rstrip("/").rsplit("/", 1)[-1]


def endpoint(
    arm_id: str, name: str, request: dict[str, Any], state: str, region: str, created: datetime, scoring_uri: str | None
) -> dict[str, Any]:
    recorded = "Creating" if state == "Creating" else "Succeeded"
    entry = _entry(
        ENDPOINT_E2E,
        "PUT" if recorded == "Creating" else "GET",
        "/onlineEndpoints/online-ept",
        201 if recorded == "Creating" else 200,
    )
    body = entry["ResponseBody"]
    body.update(id=arm_id, name=name, tags=request.get("tags") or {}, location=region)
    sent = request.get("properties", {})
    body["properties"].update(
        description=sent.get("description"),
        authMode=sent.get("authMode", "Key"),
        traffic=dict(sent.get("traffic") or {}),
        provisioningState=state,
        scoringUri=scoring_uri,
        swaggerUri=None,
    )
    body["properties"]["properties"]["azureml.onlineendpointid"] = arm_id.lower()
    body["systemData"]["createdAt"] = body["systemData"]["lastModifiedAt"] = iso(created)
    return body


def deployment(
    arm_id: str, name: str, request: dict[str, Any], state: str, region: str, created: datetime
) -> dict[str, Any]:
    """No recording small enough exists: the request echoed with the service's fields, in the endpoint's shape, and
    the defaults the service fills in for what the request left out (the managed online deployment YAML reference:
    probes 10 s / 10 s / 2 s / 1 / 30, requests 5 s, one at a time, 0.5 s queue wait; default scaling)."""
    body = copy.deepcopy(request)
    body.update(
        id=arm_id,
        name=name,
        type="Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
        location=region,
        kind="Managed",
    )
    properties = body.setdefault("properties", {})
    probe = {
        "initialDelay": "PT10S",
        "period": "PT10S",
        "timeout": "PT2S",
        "successThreshold": 1,
        "failureThreshold": 30,
    }
    properties.setdefault("livenessProbe", dict(probe))
    properties.setdefault("readinessProbe", dict(probe))
    properties.setdefault(
        "requestSettings", {"requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1, "maxQueueWait": "PT0.5S"}
    )
    properties.setdefault("scaleSettings", {"scaleType": "Default"})
    properties.setdefault("egressPublicNetworkAccess", "Enabled")
    properties.setdefault("appInsightsEnabled", False)
    properties["provisioningState"] = state
    body["systemData"] = {"createdAt": iso(created), "createdBy": "Sanitized", "lastModifiedAt": iso(created)}
    return body


def operation_status(status_url: str, status: str, started: datetime) -> dict[str, Any]:
    """An mfeOperationsStatus poll answer: `Updating`, then `Succeeded` (or `Failed`)."""
    body = _entry(ENDPOINT_E2E, "GET", "/mfeOperationsStatus/", 200)["ResponseBody"]
    operation = status_url.split("?")[0].rsplit("/", 1)[-1]
    body.update(
        id=status_url.split("?")[0].split("azure.com", 1)[-1], name=operation, status=status, startTime=iso(started)
    )
    return body


def new_operation_id() -> str:
    return f"oeidp:{uuid.uuid4()}:{uuid.uuid4()}"
