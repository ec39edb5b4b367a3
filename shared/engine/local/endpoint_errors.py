"""The local endpoints' errors, each with its stable code (as Azure ML's endpoints report the same conditions)."""

from __future__ import annotations

from shared.domain.errors import EngineError


class InvalidName(EngineError):
    code = "invalid_name"
    http_status = 400
    transient = False


class EndpointNotFound(EngineError):
    code = "endpoint_not_found"
    http_status = 404
    transient = False


class DeploymentNotFound(EngineError):
    code = "deployment_not_found"
    http_status = 404
    transient = False


class InvalidTraffic(EngineError):
    code = "invalid_traffic"
    http_status = 400
    transient = False


class DeploymentFailed(EngineError):
    """The deployment process exited while starting (permanent) or did not become ready in time (transient)."""

    code = "deployment_failed"
    transient = False


class ScoringRejected(EngineError):
    """The endpoint refused the request (4xx): retrying the same request does not help. `code` is the endpoint's."""

    code = "scoring_rejected"
    http_status = 400
    transient = False
