"""What every part of the Azure ML adapter shares: the workspace and registry clients, the credential and the clock,
and two readings of the SDK's answers (a missing resource as None, a state as the service spells it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from shared.engine.azureml.config import AzureMLConfig
from shared.engine.azureml.sdk_errors import translate

T = TypeVar("T")


@dataclass(frozen=True)
class AzureMLClients:
    """`workspace` and `registry` are azure-ai-ml MLClients (`AzureMLEngine.connect` builds the real ones);
    `credential` gives the tokens the MLflow tracking API wants (None: no token)."""

    config: AzureMLConfig
    workspace: Any
    registry: Any
    credential: Any
    now: Callable[[], datetime]


def get_or_none(operation: Callable[[], T], action: str) -> T | None:
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
