"""Scoring: a request POSTed to an endpoint's scoring URI with its key (the SDK's invoke wants a file), and the
answer's failures as the app's errors (refused, unavailable, timed out)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from shared.domain.errors import EngineError
from shared.engine.azureml.clients import AzureMLClients
from shared.engine.azureml.endpoints import AzureMLEndpoints
from shared.engine.azureml.sdk_errors import translated

SCORING_TIMEOUT_S = 120

HttpPost = Callable[[str, bytes, dict[str, str], float], Any]


def http_post_json(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")


class AzureMLScoring:
    def __init__(self, clients: AzureMLClients, endpoints: AzureMLEndpoints, http_post: HttpPost) -> None:
        self._clients = clients
        self._endpoints = endpoints
        self._http_post = http_post

    def invoke(
        self,
        endpoint_name: str,
        request: Mapping[str, Any],
        deployment_name: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """POST the request to the scoring URI with the endpoint key. The timeout bounds the connection and each
        read of the answer (default SCORING_TIMEOUT_S)."""
        timeout = timeout_s if timeout_s is not None else SCORING_TIMEOUT_S
        with translated(f"get endpoint {endpoint_name}"):
            scoring_uri = self._clients.workspace.online_endpoints.get(endpoint_name).scoring_uri
        key = self._endpoints.get_keys(endpoint_name).primary
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
