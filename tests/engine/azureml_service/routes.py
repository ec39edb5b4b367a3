"""The fake service's routes: each request the SDK sends, matched by method and path, answered from the state
with the recorded shapes (recorded.py). An unknown request is a 501 whose message names it, so a test that
reaches a path the fake lacks fails loudly instead of passing on a guess."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.engine.azureml_service import recorded
from tests.engine.azureml_service.names import ARM, SUBSCRIPTION
from tests.engine.azureml_service.transport import Request, Response

if TYPE_CHECKING:
    from tests.engine.azureml_service.service import AzureMLService

PROVIDER = r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices"
WS = PROVIDER + r"/workspaces/(?P<ws>[^/]+)"
REG = r"(?:/mferp/managementfrontend)?" + PROVIDER + r"/registries/(?P<registry>[^/]+)"
LOCATIONS = r"/subscriptions/[^/]+/providers/Microsoft\.MachineLearningServices/locations/(?P<region>[^/]+)"
HISTORY = r"/history/v1\.0" + WS

Route = tuple[str, re.Pattern[str], Callable[..., Response]]


def not_found(what: str, detail: str = "NotFound") -> Response:
    return Response(404, recorded.error("UserError", f"{what} was not found.", detail))


class Router:
    def __init__(self, service: AzureMLService) -> None:
        self.s = service
        from tests.engine.azureml_service import resources as r

        table: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", r"/registrymanagement/v1\.0/registries/(?P<registry>[^/]+)/discovery", r.registry_discovery),
            ("GET", REG + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", r.registry_model),
            ("GET", REG + r"/models/(?P<name>[^/]+)/versions", r.registry_model_versions),
            ("GET", REG + r"/components/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", r.registry_component),
            ("GET", r"/discovery", r.workspace_discovery),
            ("GET", WS, r.workspace),
            ("GET", LOCATIONS + r"/vmSizes", r.vm_sizes),
            ("GET", LOCATIONS + r"/(?:mfeOperationsStatus|mfeOperationResults)/(?P<operation>[^/]+)", r.operation),
            ("GET", WS + r"/computes/(?P<name>[^/]+)", r.compute),
            ("PUT", WS + r"/jobs/(?P<name>[^/]+)", r.put_job),
            ("GET", WS + r"/jobs/(?P<name>[^/]+)", r.get_job),
            ("POST", WS + r"/jobs/(?P<name>[^/]+)/cancel", r.cancel_job),
            (
                "GET",
                HISTORY + r"/(?:experiments/[^/]+/|experimentids/[^/]+/)?runs/(?P<name>[^/]+)/children",
                r.job_children,
            ),
            (
                "GET",
                HISTORY + r"/(?:experiments/[^/]+/|experimentids/[^/]+/)?runs/(?P<name>[^/]+)/details",
                r.run_details,
            ),
            ("PUT", WS + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", r.put_model),
            ("GET", WS + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", r.get_model),
            ("GET", WS + r"/models/(?P<name>[^/]+)/versions", r.list_models),
            ("GET", WS + r"/models/(?P<name>[^/]+)", r.get_model_container),
            ("PUT", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)", r.put_endpoint),
            ("GET", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)", r.get_endpoint),
            ("GET", WS + r"/onlineEndpoints", r.list_endpoints),
            ("DELETE", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)", r.delete_endpoint),
            ("POST", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/listKeys", r.list_keys),
            ("PUT", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)", r.put_deployment),
            ("GET", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)", r.get_deployment),
            ("GET", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments", r.list_deployments),
            ("DELETE", WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)", r.delete_deployment),
            (
                "POST",
                WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<name>[^/]+)/getLogs",
                r.deployment_logs,
            ),
            ("POST", r"/subscriptions/[^/]+/metrics:getBatch", r.metrics_batch),
        ]
        self.routes: list[Route] = [(method, re.compile(pattern + "$"), handler) for method, pattern, handler in table]

    def handle(self, request: Request) -> Response:
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match and request.method == method:
                with self.s.lock:
                    if self.s.closed and "mfeOperation" in request.path:
                        return Response(500, recorded.error("InternalError", "the fake service was closed"))
                    return handler(self.s, request, **match.groupdict())
        return Response(
            501, recorded.error("NotImplemented", f"the fake has no route for {request.method} {request.path}")
        )


def new_operation(service: AzureMLService, region: str, kind: str, polls_left: int = 2, **state: Any) -> str:
    """A long-running operation to poll: returns its Azure-AsyncOperation URL."""
    operation = f"{kind}:{uuid.uuid4()}:{uuid.uuid4()}"
    service.operations[operation] = {"polls_left": polls_left, "started": service.now(), **state}
    return (
        f"https://{ARM}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.MachineLearningServices"
        f"/locations/{region}/mfeOperationsStatus/{operation}?api-version=2022-02-01-preview"
    )
