"""Scoring on a local endpoint: the request POSTed to its router's /score with the primary key, and the answer's
failures as the app's errors (the endpoint's own code, rejected, unavailable, timed out)."""

from __future__ import annotations

import json
from typing import Any

from shared.adapters.http import HttpFailure, post_json
from shared.domain.errors import EngineError
from shared.engine.local.endpoint_errors import DeploymentNotFound, EndpointNotFound, ScoringRejected
from shared.engine.local.endpoint_files import EndpointFiles
from shared.engine.local.serving.router import DEPLOYMENT_HEADER

INVOKE_TIMEOUT_S = 300.0


def score(
    files: EndpointFiles,
    endpoint_name: str,
    request: dict[str, Any],
    deployment_name: str | None,
    timeout_s: float,
) -> Any:
    """The parsed JSON answer; past `timeout_s` (connecting, or waiting for the answer's bytes),
    EngineError(code="scoring_timeout"), transient."""
    folder = files.required(endpoint_name)
    config = files.read(folder)
    if config is None:
        raise EndpointNotFound(f"endpoint {endpoint_name} does not exist")
    keys = files.keys(endpoint_name)
    headers = {"Authorization": f"Bearer {keys.primary}"}
    if deployment_name:
        headers[DEPLOYMENT_HEADER] = deployment_name
    try:
        return post_json(f"http://127.0.0.1:{config['port']}/score", request, headers=headers, timeout_s=timeout_s)
    except HttpFailure as exc:
        if exc.status is not None and not exc.not_json:
            raise scoring_error(endpoint_name, exc) from None
        if exc.timed_out:  # connecting, or waiting for the answer
            raise EngineError(
                f"endpoint {endpoint_name} did not answer within {timeout_s:g} s", code="scoring_timeout"
            ) from None
        if exc.not_json:
            raise EngineError(f"endpoint {endpoint_name} answered with invalid JSON", code="invalid_answer") from exc
        raise EngineError(
            f"endpoint {endpoint_name} is not answering: {exc.message}", code="endpoint_unavailable"
        ) from None


def scoring_error(endpoint_name: str, exc: HttpFailure) -> EngineError:
    """The error an HTTP error answer stands for: the endpoint's code; 4xx but 429 permanent, 429 and 5xx transient."""
    try:
        error = json.loads(exc.body).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    status = exc.status or 0
    code = str(error.get("code") or f"http_{status}")
    message = f"endpoint {endpoint_name} answered {status}: {error.get('message') or exc.body[:200]}"
    if code == "deployment_not_found":
        return DeploymentNotFound(message)
    if exc.refused:
        return ScoringRejected(message, code=code)
    return EngineError(message, code=code)  # 429, 5xx: transient
