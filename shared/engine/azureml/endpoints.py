"""Managed online endpoints: created once and waited for, their traffic (every deployment, 0% included), keys, and
the request activity the idle sweep reads."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from shared.domain.errors import EngineError
from shared.engine.azureml.clients import AzureMLClients, get_or_none, state_text
from shared.engine.azureml.monitoring import EndpointActivity, MetricsQuery, endpoint_activity
from shared.engine.azureml.sdk_errors import translated
from shared.engine.base import EndpointInfo, EndpointKeys

logger = logging.getLogger(__name__)

CREATED_AT_TAG = "ft-autopilot-created-at"


class AzureMLEndpoints:
    def __init__(self, clients: AzureMLClients, metrics: MetricsQuery | None) -> None:
        self._clients = clients
        self._metrics = metrics

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        """One key-authenticated managed online endpoint, created once (and waited for: a minute or two)."""
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoints = self._clients.workspace.online_endpoints
        existing = get_or_none(lambda: endpoints.get(name), f"get endpoint {name}")
        if existing is not None and state_text(existing.provisioning_state).lower() == "deleting":
            raise EngineError(f"endpoint {name} is still being deleted; retried later", code="endpoint_busy")
        if existing is not None:
            return self._endpoint_info(existing)
        endpoint = ManagedOnlineEndpoint(
            name=name,
            auth_mode="key",
            description=f"ft-autopilot: {tags.get('model', name)}, fine-tuned for chat completion",
            tags={**tags, CREATED_AT_TAG: self._clients.now().isoformat()},
        )
        with translated(f"create endpoint {name}"):
            created = endpoints.begin_create_or_update(endpoint).result()
        logger.info("created endpoint %s", name)
        return self._endpoint_info(created)

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        endpoints = self._clients.workspace.online_endpoints
        with translated(f"set traffic {dict(traffic)} on {endpoint_name}"):
            endpoint = endpoints.get(endpoint_name)
            endpoint.traffic = dict(traffic)
            updated = endpoints.begin_create_or_update(endpoint).result()
        return self._endpoint_info(updated)

    def get_keys(self, endpoint_name: str) -> EndpointKeys:
        with translated(f"get the keys of endpoint {endpoint_name}"):
            keys = self._clients.workspace.online_endpoints.get_keys(endpoint_name)
        return EndpointKeys(primary=keys.primary_key, secondary=keys.secondary_key)

    def list_endpoints(self) -> list[EndpointInfo]:
        with translated("list endpoints"):
            endpoints = list(self._clients.workspace.online_endpoints.list())
        return [self._endpoint_info(endpoint, with_activity=True) for endpoint in endpoints]

    def delete_endpoint(self, name: str) -> None:
        """Begin the deletion of the endpoint and its deployments; registered models stay."""
        endpoints = self._clients.workspace.online_endpoints
        get_or_none(lambda: endpoints.begin_delete(name=name), f"delete endpoint {name}")

    def _endpoint_info(self, endpoint: Any, *, with_activity: bool = False) -> EndpointInfo:
        tags = dict(endpoint.tags or {})
        properties = getattr(endpoint, "properties", None) or {}
        activity = EndpointActivity(requests=0, last_request_at=None)
        info = EndpointInfo(
            name=endpoint.name,
            scoring_uri=endpoint.scoring_uri,
            tags=tags,
            created_at=_parse_time(properties.get("createdAt")) or _parse_time(tags.get(CREATED_AT_TAG)),
            traffic=self._traffic(endpoint),
        )
        if with_activity and info.is_managed:
            activity = self._activity(endpoint)
        return replace(info, request_count=activity.requests, last_request_at=activity.last_request_at)

    def _activity(self, endpoint: Any) -> EndpointActivity:
        """Requests over the idle window. Unknown activity is never taken for idleness: without a metrics client
        or a resource id, or on any error, the endpoint counts as used now."""
        now = self._clients.now
        in_use = EndpointActivity(requests=0, last_request_at=now())
        if self._metrics is None or not endpoint.id:
            logger.warning("endpoint %s: no request metrics to read; counted as in use", endpoint.name)
            return in_use
        try:
            with translated(f"read the request metrics of endpoint {endpoint.name}"):
                return endpoint_activity(self._metrics, endpoint.id, self._clients.config.idle_window, now=now())
        except EngineError as exc:
            logger.warning("endpoint %s: %s; counted as in use", endpoint.name, exc.message)
            return in_use

    def _traffic(self, endpoint: Any) -> dict[str, int]:
        """Every deployment with its weight: the service (and the SDK, before it sends) drops 0% entries from the
        endpoint's traffic, so deployments at 0% are only found by listing them."""
        weights = {name.lower(): int(weight) for name, weight in (endpoint.traffic or {}).items()}
        with translated(f"list the deployments of endpoint {endpoint.name}"):
            names = [d.name for d in self._clients.workspace.online_deployments.list(endpoint.name)]
        return {name: weights.get(name.lower(), 0) for name in sorted(set(names) | set(weights))}


def _parse_time(text: str | None) -> datetime | None:
    """An ISO time from a property or tag; one without a zone is UTC, as Azure's system data is."""
    try:
        parsed = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed
