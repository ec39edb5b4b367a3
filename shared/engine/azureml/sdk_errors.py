"""Azure SDK errors as the app's errors: a stable code, whether a retry can help, and what to do about it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from shared.domain.errors import AutopilotError, EngineError

_QUOTA_MARKERS = ("quota", "outofquota", "insufficient capacity", "notenoughcores")


def translate(exc: Exception, action: str) -> AutopilotError:
    """The app's error for an SDK exception raised while doing `action` (e.g. "create deployment d-1 on ep-x")."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, AutopilotError):
        return exc
    text = str(getattr(exc, "message", None) or exc).strip()
    status = getattr(exc, "status_code", None)
    lowered = text.lower()
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return EngineError(
            f"{action}: Azure refused the app's identity ({text}). Check that the managed identity (AZURE_CLIENT_ID) "
            "has the AzureML Data Scientist role on the workspace",
            code="azureml_auth_failed",
            transient=False,
        )
    if isinstance(exc, ResourceNotFoundError) or status == 404 or _is_sdk_not_found(exc):
        return EngineError(
            f"{action}: not found ({text}). Check the names the settings give: AZURE_SUBSCRIPTION_ID, "
            "AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME, AZUREML_COMPUTE, BASE_MODEL_ID",
            code="azureml_not_found",
            transient=False,
        )
    if any(marker in lowered for marker in _QUOTA_MARKERS):
        return EngineError(
            f"{action}: not enough quota ({text}). Request more quota for that VM family in the subscription "
            "(Azure portal, Quotas), or choose another size (AZUREML_INFERENCE_INSTANCE_TYPE, AZUREML_COMPUTE)",
            code="azureml_quota_exceeded",
            transient=False,
        )
    if "already exists" in lowered or "already an endpoint" in lowered:
        hint = (
            " Endpoint names are unique per region, across subscriptions: change FINETUNED_MODEL_SUFFIX to get "
            "another endpoint name"
            if "endpoint" in action
            else ""
        )
        return EngineError(
            f"{action}: the name is already taken ({text}).{hint}",
            code="azureml_already_exists",
            transient=False,
        )
    if isinstance(exc, ResourceExistsError) or status == 409:  # most often: another operation is still running
        return EngineError(f"{action}: conflict ({text}); retried later", code="azureml_conflict")
    if status == 429 or "throttl" in lowered or "too many requests" in lowered:
        return EngineError(f"{action}: throttled by Azure ML ({text}); retried later", code="azureml_throttled")
    if isinstance(exc, ServiceRequestError | ServiceResponseError) or (status is not None and status >= 500):
        return EngineError(f"{action}: Azure ML did not answer ({text}); retried later", code="azureml_unavailable")
    if isinstance(exc, HttpResponseError):
        return EngineError(f"{action}: rejected by Azure ML ({text})", code="azureml_request_rejected", transient=False)
    from azure.ai.ml.exceptions import MlException

    if isinstance(exc, MlException):
        return EngineError(f"{action}: {text}", code="azureml_invalid_request", transient=False)
    raise exc  # not an SDK error: a bug of ours, which must not be disguised


def _is_sdk_not_found(exc: Exception) -> bool:
    """azure-ai-ml raises its own ValidationException, not a 404, when a label names no version (an archived model)."""
    from azure.ai.ml.exceptions import MlException, ValidationErrorType

    return isinstance(exc, MlException) and getattr(exc, "error_type", None) == ValidationErrorType.RESOURCE_NOT_FOUND


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise translate(exc, action) from exc
