"""Scoring: a request POSTed to an endpoint's scoring URI with its key (the SDK's invoke wants a file), and the
answer's failures as the app's errors (refused, unavailable, timed out)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.adapters.http import HttpFailure, post_json
from shared.domain.errors import EngineError
from shared.engine.azureml.clients import AzureMLClients
from shared.engine.azureml.endpoints import AzureMLEndpoints
from shared.engine.azureml.sdk_errors import translated
from shared.engine.base import ScoringRequest

SCORING_TIMEOUT_S = 120

HttpPost = Callable[[str, Mapping[str, Any], dict[str, str], float], Any]


def http_post_json(url: str, body: Mapping[str, Any], headers: dict[str, str], timeout_s: float) -> Any:
    return post_json(url, body, headers=headers, timeout_s=timeout_s)


class AzureMLScoring:
    def __init__(self, clients: AzureMLClients, endpoints: AzureMLEndpoints, http_post: HttpPost) -> None:
        self._clients = clients
        self._endpoints = endpoints
        self._http_post = http_post

    def invoke(self, request: ScoringRequest) -> Any:
        """POST the request's body to the scoring URI with the endpoint key. The timeout bounds the connection and
        each read of the answer (default SCORING_TIMEOUT_S)."""
        endpoint_name = request.endpoint_name
        timeout = request.timeout_s if request.timeout_s is not None else SCORING_TIMEOUT_S
        with translated(f"get endpoint {endpoint_name}"):
            scoring_uri = self._clients.workspace.online_endpoints.get(endpoint_name).scoring_uri
        key = self._endpoints.get_keys(endpoint_name).primary
        headers = {"Authorization": f"Bearer {key}"}
        if request.deployment_name:
            headers["azureml-model-deployment"] = request.deployment_name
        try:
            return self._http_post(scoring_uri, request.body, headers, timeout)
        except HttpFailure as exc:
            if exc.timed_out:
                raise EngineError(
                    f"{endpoint_name} did not answer within {timeout:g} s", code="scoring_timeout"
                ) from exc
            if exc.refused:
                raise EngineError(
                    f"{endpoint_name} refused the request: HTTP {exc.status} {exc.body[:500]}",
                    code="scoring_rejected",
                    transient=False,
                ) from exc
            raise EngineError(
                f"{endpoint_name} did not answer: {exc.message[:500]}", code="scoring_unavailable"
            ) from exc
