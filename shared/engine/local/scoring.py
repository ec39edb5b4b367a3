"""Scoring on a local endpoint: the request POSTed to its router's /score with the primary key, and the answer's
failures as the app's errors (the endpoint's own code, rejected, unavailable, timed out)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

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
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {keys.primary}"}
    if deployment_name:
        headers[DEPLOYMENT_HEADER] = deployment_name
    http_request = urllib.request.Request(
        f"http://127.0.0.1:{config['port']}/score",
        data=json.dumps(request).encode("utf-8"),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(http_request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise scoring_error(endpoint_name, exc) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):  # connecting (wrapped in URLError) or waiting for the answer
            raise EngineError(
                f"endpoint {endpoint_name} did not answer within {timeout_s:g} s", code="scoring_timeout"
            ) from None
        raise EngineError(f"endpoint {endpoint_name} is not answering: {reason}", code="endpoint_unavailable") from None
    except ValueError as exc:
        raise EngineError(f"endpoint {endpoint_name} answered with invalid JSON", code="invalid_answer") from exc


def scoring_error(endpoint_name: str, exc: urllib.error.HTTPError) -> EngineError:
    """The error an HTTP error answer stands for: the endpoint's code; 4xx but 429 permanent, 429 and 5xx transient."""
    try:
        error = json.loads(exc.read()).get("error") or {}
    except (ValueError, AttributeError, OSError):
        error = {}
    code = str(error.get("code") or f"http_{exc.code}")
    message = f"endpoint {endpoint_name} answered {exc.code}: {error.get('message') or exc.reason}"
    if code == "deployment_not_found":
        return DeploymentNotFound(message)
    if 400 <= exc.code < 500 and exc.code != 429:
        return ScoringRejected(message, code=code)
    return EngineError(message, code=code)  # 429, 5xx: transient
