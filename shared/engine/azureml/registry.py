"""A registry model version's REST body, fetched through azure-ai-ml's own registry client.

The SDK's `Model` entity drops `isArchived` and the system metadata (compute lists, retirement dates), so the body
is read as the registry sends it. `get_registry_versioned_asset` is the SDK's own helper for that GET (the same
data-plane URL and api-version its `models.get` uses); it and the operation's client are private, so this module is
the one place that touches them.
"""

from __future__ import annotations

from typing import Any


def registry_model_body(registry: Any, name: str, version: str) -> dict[str, Any]:
    """`registry` is an MLClient for a registry; a missing version raises the SDK's ResourceNotFoundError."""
    from azure.ai.ml._utils._registry_utils import get_registry_versioned_asset

    models = registry.models
    return get_registry_versioned_asset(
        models._registry_service_client,
        "models",
        name,
        version,
        models._resource_group_name,
        models._registry_name,
    )
