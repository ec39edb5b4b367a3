"""The handlers behind the fake's routes: one per request the SDK sends, reading and writing the service's state
(REST bodies) and answering with the recorded shapes. Each records the SDK operation it serves in `service.calls`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.engine.azureml_service import recorded
from tests.engine.azureml_service.names import (
    REGION,
    REGISTRY_RESOURCE_GROUP,
    REGISTRY_SUBSCRIPTION,
    VM_SIZES,
    WORKSPACE_ID,
)
from tests.engine.azureml_service.routes import new_operation, not_found
from tests.engine.azureml_service.transport import Request, Response

if TYPE_CHECKING:
    from tests.engine.azureml_service.service import AzureMLService

TERMINAL = ("Completed", "Failed", "Canceled")


# -- registry ---------------------------------------------------------------------------------------------


def registry_discovery(s: AzureMLService, request: Request, registry: str) -> Response:
    s.record("registry.discovery", registry)
    return Response(200, recorded.registry_discovery(registry, REGISTRY_SUBSCRIPTION, REGISTRY_RESOURCE_GROUP, REGION))


def registry_model(s: AzureMLService, request: Request, registry: str, name: str, version: str) -> Response:
    s.record("registry.models.get", f"{name}:{version}")
    body = s.registry_models.get((name, version))
    return Response(200, body) if body else not_found(f"model {name}:{version}", "ModelNotFound")


def registry_model_versions(s: AzureMLService, request: Request, registry: str, name: str) -> Response:
    """The label lookup (`$orderBy=createdtime desc&$top=1`) and listings: active versions only."""
    s.record("registry.models.get", f"{name}:latest")
    versions = [body for (model, _), body in s.registry_models.items() if model == name]
    if not versions:
        return not_found(f"model container {name}", "ModelNotFound")
    active = [body for body in versions if not body["properties"].get("isArchived")]
    return Response(200, {"value": active[-1:] if request.query.get("$top") == "1" else active})


def registry_component(s: AzureMLService, request: Request, registry: str, name: str, version: str) -> Response:
    s.record("registry.components.get", f"{name}:{version}")
    body = s.registry_components.get((name, version))
    return Response(200, body) if body else not_found(f"component {name}:{version}", "ComponentNotFound")


# -- workspace --------------------------------------------------------------------------------------------


def workspace(s: AzureMLService, request: Request, ws: str) -> Response:
    s.record("workspaces.get", ws)
    return Response(200, recorded.workspace(WORKSPACE_ID, ws, REGION))


def workspace_discovery(s: AzureMLService, request: Request) -> Response:
    return Response(200, recorded.discovery(REGION))


def vm_sizes(s: AzureMLService, request: Request, region: str) -> Response:
    s.record("compute.list_sizes", region)
    return Response(200, recorded.vm_sizes(VM_SIZES))


def compute(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    s.record("compute.get", name)
    if name not in s.computes:
        return not_found(f"compute {name}", "ComputeNotFound")
    size, state = s.computes[name]
    return Response(200, recorded.compute(f"{WORKSPACE_ID}/computes/{name}", name, size, state, REGION))


def operation(s: AzureMLService, request: Request, region: str, operation: str) -> Response:
    """A poll of a long-running operation: `Updating` until its resource is done, then its outcome."""
    s.record("operations.get", operation)
    state = s.operations.get(operation)
    if state is None:
        return not_found(f"operation {operation}")
    if "deployment" in state:  # follows the deployment's own provisioning
        endpoint_name, name = state["deployment"]
        body = s.deployments.get(endpoint_name, {}).get(name)
        provisioning = body["properties"]["provisioningState"] if body else "Succeeded"
        status = {"Creating": "InProgress", "Updating": "InProgress"}.get(provisioning, provisioning)
    elif state["polls_left"] > 0:
        state["polls_left"] -= 1
        status = "Updating"
    else:
        status = state.get("outcome", "Succeeded")
    if "jc:" in operation:  # a job cancel polls mfeOperationResults: 202 while running, then 200 with no body
        return Response(202, {}, {"Location": request.url}) if status == "Updating" else Response(200, None)
    return Response(200, recorded.operation_status(request.url, status, state["started"]))


# -- jobs -------------------------------------------------------------------------------------------------


def put_job(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    s.record("jobs.create_or_update", name)
    if name in s.jobs:
        return Response(400, recorded.bad_request(f"A job with this ID already exists: {name}"))
    s.job_requests[name] = request.body
    body = recorded.job(f"{WORKSPACE_ID}/jobs/{name}", name, request.body, s.job_script[0], s.now())
    s.jobs[name] = body
    # the pipeline's steps are jobs too (run history lists them as children; ARM gets them by name)
    node = f"{name}_chat_completion_pipeline"
    s.job_children[name] = [recorded.child_run(node, "chat_completion_pipeline", name, "NotStarted")]
    steps = [("model_import", "chat_completion_model_import"), ("finetune", "chat_completion_finetune")]
    s.job_children[node] = [recorded.child_run(f"{name}_{key}", label, node, "NotStarted") for key, label in steps]
    for child, label, job_type in [(node, "chat_completion_pipeline", "Pipeline")] + [
        (f"{name}_{key}", label, "Command") for key, label in steps
    ]:
        sent = {"properties": {"jobType": job_type, "displayName": label, "experimentName": sent_experiment(request)}}
        s.jobs[child] = recorded.job(f"{WORKSPACE_ID}/jobs/{child}", child, sent, "Completed", s.now())
    s.step_metrics[f"{name}_finetune"] = {
        key: list(v) if isinstance(v, list) else v for key, v in s.finetune_metrics.items()
    }
    return Response(201, body, {"Location": request.url})


def sent_experiment(request: Request) -> str:
    return str(request.body.get("properties", {}).get("experimentName", "Default"))


def get_job(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    s.record("jobs.get", name)
    if name not in s.jobs:
        return not_found(f"job {name}", "JobNotFound")
    s.advance_job(name)
    return Response(200, s.jobs[name])


def cancel_job(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    s.record("jobs.begin_cancel", name)
    if name not in s.jobs:
        return not_found(f"job {name}", "JobNotFound")
    if s.jobs[name]["properties"]["status"] not in TERMINAL:
        s.jobs[name]["properties"]["status"] = "Canceled"
    url = new_operation(s, REGION, "jc", polls_left=1).replace("mfeOperationsStatus", "mfeOperationResults")
    return Response(202, "null", {"Location": url.split("?")[0], "x-ms-async-operation-timeout": "PT1H"})


def job_children(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    s.record("jobs.list", name)
    return Response(200, {"value": s.job_children.get(name, []), "nextLink": None, "continuationToken": None})


def run_details(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    """A run as run history has it: a step's status from its parent's children, a job's from the job, and the
    error a failed run was given (service.fail_job)."""
    s.record("runs.get_details", name)
    for parent, children in s.job_children.items():
        for child in children:
            if child["runId"] == name:
                return Response(200, recorded.run_details(name, parent, child["status"], s.run_errors.get(name)))
    if name not in s.jobs:
        return not_found(f"run {name}", "RunNotFound")
    status = s.jobs[name]["properties"]["status"]
    return Response(200, recorded.run_details(name, None, status, s.run_errors.get(name)))


# -- models -----------------------------------------------------------------------------------------------


def put_model(s: AzureMLService, request: Request, ws: str, name: str, version: str) -> Response:
    s.record("models.create_or_update", f"{name}:{version}")
    previous = s.models.get((name, version))
    sent = request.body.get("properties", {})
    if previous is not None and previous["properties"].get("modelUri") != sent.get("modelUri"):
        return Response(409, recorded.error("UserError", f"model {name}:{version} exists with another path"))
    created = recorded.iso_to_datetime(previous["systemData"]["createdAt"]) if previous else s.now()
    body = recorded.model_version(f"{WORKSPACE_ID}/models/{name}/versions/{version}", version, request.body, created)
    s.models[(name, version)] = body
    return Response(200 if previous else 201, body)


def get_model(s: AzureMLService, request: Request, ws: str, name: str, version: str) -> Response:
    s.record("models.get", f"{name}:{version}")
    body = s.models.get((name, version))
    return Response(200, body) if body else not_found(f"model {name}:{version}", "ModelNotFound")


def list_models(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    s.record("models.list" if request.query.get("$top") != "1" else "models.get", name)
    versions = [body for (model, _), body in s.models.items() if model == name]
    if not versions:
        return not_found(f"model container {name}", "ModelNotFound")
    versions.sort(key=lambda body: body["systemData"]["createdAt"], reverse=True)
    return Response(200, {"value": versions[:1] if request.query.get("$top") == "1" else versions})


def get_model_container(s: AzureMLService, request: Request, ws: str, name: str) -> Response:
    s.record("models.get", name)
    return not_found(f"model container {name}", "ModelNotFound")


# -- endpoints --------------------------------------------------------------------------------------------


def put_endpoint(s: AzureMLService, request: Request, ws: str, endpoint: str) -> Response:
    s.record("online_endpoints.begin_create_or_update", endpoint)
    sent = request.body.get("properties", {})
    traffic = {name.lower(): int(weight) for name, weight in (sent.get("traffic") or {}).items() if int(weight)}
    unknown = set(traffic) - set(s.deployments.get(endpoint, {}))
    if unknown or sum(traffic.values()) not in (0, 100):
        known = sorted(s.deployments.get(endpoint, {}))
        return Response(400, recorded.bad_request(f"invalid traffic {traffic} for deployments {known}"))
    previous = s.endpoints.get(endpoint)
    created = recorded.iso_to_datetime(previous["systemData"]["createdAt"]) if previous else s.now()
    scoring_uri = f"{s.scoring.url}/{endpoint}/score"
    body = recorded.endpoint(
        f"{WORKSPACE_ID}/onlineEndpoints/{endpoint}", endpoint, request.body, "Succeeded", REGION, created, scoring_uri
    )
    body["properties"]["traffic"] = traffic
    s.endpoints[endpoint] = body
    s.keys.setdefault(endpoint, {"primaryKey": f"pk-{endpoint}", "secondaryKey": f"sk-{endpoint}"})
    answer = recorded.endpoint(
        body["id"], endpoint, request.body, "Creating" if not previous else "Updating", REGION, created, None
    )
    status_url = new_operation(s, REGION, "oeidp")
    answer["properties"]["properties"]["AzureAsyncOperationUri"] = status_url.split("&")[0]
    return Response(201 if not previous else 200, answer, {"Azure-AsyncOperation": status_url, "Location": request.url})


def get_endpoint(s: AzureMLService, request: Request, ws: str, endpoint: str) -> Response:
    s.record("online_endpoints.get", endpoint)
    body = s.endpoints.get(endpoint)
    return Response(200, body) if body else not_found(f"endpoint {endpoint}", "EndpointNotFound")


def list_endpoints(s: AzureMLService, request: Request, ws: str) -> Response:
    s.record("online_endpoints.list", "")
    return Response(200, {"value": list(s.endpoints.values())})


def delete_endpoint(s: AzureMLService, request: Request, ws: str, endpoint: str) -> Response:
    s.record("online_endpoints.begin_delete", endpoint)
    if s.endpoints.pop(endpoint, None) is None:
        return not_found(f"endpoint {endpoint}", "EndpointNotFound")
    s.keys.pop(endpoint, None)
    s.deployments.pop(endpoint, None)
    status_url = new_operation(s, REGION, "oeidp")
    results = status_url.replace("mfeOperationsStatus", "mfeOperationResults")
    return Response(202, "null", {"Azure-AsyncOperation": status_url, "Location": results})


def list_keys(s: AzureMLService, request: Request, ws: str, endpoint: str) -> Response:
    s.record("online_endpoints.get_keys", endpoint)
    keys = s.keys.get(endpoint)
    return Response(200, keys) if keys else not_found(f"endpoint {endpoint}", "EndpointNotFound")


# -- deployments ------------------------------------------------------------------------------------------


def put_deployment(s: AzureMLService, request: Request, ws: str, endpoint: str, name: str) -> Response:
    s.record("online_deployments.begin_create_or_update", name)
    if endpoint not in s.endpoints:
        return not_found(f"endpoint {endpoint}", "EndpointNotFound")
    arm_id = f"{WORKSPACE_ID}/onlineEndpoints/{endpoint}/deployments/{name}"
    body = recorded.deployment(arm_id, name, request.body, "Creating", REGION, s.now())
    s.deployments[endpoint][name] = body
    status_url = new_operation(s, REGION, "odidp", deployment=(endpoint, name))
    return Response(201, body, {"Azure-AsyncOperation": status_url, "Location": request.url})


def get_deployment(s: AzureMLService, request: Request, ws: str, endpoint: str, name: str) -> Response:
    s.record("online_deployments.get", name)
    if name not in s.deployments.get(endpoint, {}):
        return not_found(f"deployment {name} of {endpoint}", "DeploymentNotFound")
    s.look_at_deployment(endpoint, name)
    return Response(200, s.deployments[endpoint][name])


def list_deployments(s: AzureMLService, request: Request, ws: str, endpoint: str) -> Response:
    s.record("online_deployments.list", endpoint)
    return Response(200, {"value": list(s.deployments.get(endpoint, {}).values())})


def delete_deployment(s: AzureMLService, request: Request, ws: str, endpoint: str, name: str) -> Response:
    s.record("online_deployments.begin_delete", name)
    if name not in s.deployments.get(endpoint, {}):
        return not_found(f"deployment {name} of {endpoint}", "DeploymentNotFound")
    traffic = s.endpoints[endpoint]["properties"]["traffic"]
    if traffic.get(name, 0) > 0:
        return Response(400, recorded.bad_request(f"deployment {name} has {traffic[name]}% traffic; shift it first"))
    del s.deployments[endpoint][name]
    status_url = new_operation(s, REGION, "odidp")
    return Response(
        202,
        "null",
        {
            "Azure-AsyncOperation": status_url,
            "Location": status_url.replace("mfeOperationsStatus", "mfeOperationResults"),
        },
    )


def deployment_logs(s: AzureMLService, request: Request, ws: str, endpoint: str, name: str) -> Response:
    s.record("online_deployments.get_logs", name)
    lines = (request.body or {}).get("tail", 100)
    text = f"Liveness probe failed: container of {name} exited with code 137 (out of memory); last {lines} lines"
    return Response(200, {"content": text})


# -- Azure Monitor ----------------------------------------------------------------------------------------


def metrics_batch(s: AzureMLService, request: Request) -> Response:
    status, body = s.metrics.get_batch(request.query, request.body or {})
    return Response(status, body)
