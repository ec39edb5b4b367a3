"""Endpoint activity from Azure Monitor: RequestsPerMinute per managed online endpoint over the idle window.

Azure Monitor has no data points for minutes without requests, so missing data counts as zero requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

ENDPOINT_METRICS_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
REQUESTS_PER_MINUTE = "RequestsPerMinute"


@dataclass(frozen=True)
class EndpointActivity:
    requests: int
    last_request_at: datetime | None


class MetricsQuery(Protocol):
    """The part of azure.monitor.querymetrics.MetricsClient this module uses."""

    def query_resources(self, *, resource_ids: list[str], metric_namespace: str, metric_names: list[str],
                        timespan: timedelta, granularity: timedelta, aggregations: list[str]) -> list[Any]: ...


def endpoint_activity(client: MetricsQuery, resource_id: str, window: timedelta) -> EndpointActivity:
    """Requests to one endpoint over the last `window`, and the start of the last minute that had any."""
    results = client.query_resources(
        resource_ids=[resource_id],
        metric_namespace=ENDPOINT_METRICS_NAMESPACE,
        metric_names=[REQUESTS_PER_MINUTE],
        timespan=window,
        granularity=timedelta(minutes=1),
        aggregations=["Total"],
    )
    return activity_from(results)


def activity_from(results: list[Any]) -> EndpointActivity:
    requests, last = 0, None
    for result in results or ():
        for metric in getattr(result, "metrics", None) or ():
            for series in getattr(metric, "timeseries", None) or ():
                for point in getattr(series, "data", None) or ():
                    total = point.total or 0
                    if total > 0:
                        requests += int(total)
                        if last is None or point.timestamp > last:
                            last = point.timestamp
    return EndpointActivity(requests=requests, last_request_at=last)


def metrics_endpoint(location: str) -> str:
    """The regional Azure Monitor metrics endpoint of a workspace's location, e.g. eastus."""
    return f"https://{location.lower().replace(' ', '')}.metrics.monitor.azure.com"
