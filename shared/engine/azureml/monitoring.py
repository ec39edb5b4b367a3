"""Endpoint activity from Azure Monitor: the requests a managed online endpoint had over the idle window.

Deleting an endpoint a customer is calling is the worst thing this app can do, so this module reads Azure Monitor's
answer strictly and raises `ActivityNotUnderstood` (an EngineError: the engine counts the endpoint as in use and logs
the reason) for anything it does not understand.

What the service documents
    `RequestsPerMinute` of Microsoft.MachineLearningServices/workspaces/onlineEndpoints: "The number of requests sent
    to online endpoint within a minute", unit Count, aggregation **Average** (the only one listed), dimensions
    deployment, statusCode, statusCodeClass, modelStatusCode, time grain PT1M.
    https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
    (source: MicrosoftDocs/azure-reference-other, azure-monitor-ref/supported-metrics/includes/
    microsoft-machinelearningservices-workspaces-onlineendpoints-metrics-include.md). Asking for `Total`, as this
    module once did, asks for an aggregation the metric does not document.

What we send
    azure-monitor-querymetrics 1.0.0 `MetricsClient.query_resources` POSTs
    `{regional endpoint}/subscriptions/{sub}/metrics:getBatch?api-version=2024-02-01&metricnamespace=...&metricnames=
    RequestsPerMinute&aggregation=Average&interval=PT1M&starttime=...&endtime=...` with `{"resourceids": [id]}`
    (azure/monitor/querymetrics/_operations/_operations.py, _patch.py). No $filter: one unsplit time series.

What comes back (Azure/azure-rest-api-specs, specification/monitor/Azure.Monitor.Query.Metrics/examples/2024-02-01/
MetricBatchExample.json, the operation and version the SDK calls)
    `{"values": [{"starttime", "endtime", "interval", "namespace", "resourceregion", "resourceid", "value": [{"id":
    <resource id>/providers/Microsoft.Insights/metrics/<name>, "name": {"value", "localizedValue"}, "unit",
    "errorCode": "Success", "timeseries": [{"metadatavalues": [], "data": [{"timeStamp": ..., "average": ...}]}]}]}]}`
    with one point per grain of the timespan. A grain without samples is a point with only `timeStamp`: the
    aggregation is ABSENT, not 0 (the example's GetBlobServiceProperties series).

What an idle endpoint looks like, and which shapes mean what here
    - A point with `timeStamp` only: a minute without samples, so without requests (0). This is the shape an idle
      endpoint is answered with: one time series, one point per minute, none with a value. Evidence: the spec
      example above; Azure/azure-cli#13760 (a resource without data, unsplit: one series, `metadatavalues: []`,
      points whose aggregations the CLI prints as null, i.e. absent on the wire); open-telemetry/
      opentelemetry-collector-contrib#44940 (an unsplit query gives 60 points for an hour at PT1M).
    - A point with `"average": 0.0`: samples of zero requests. Some resource providers fill gaps with zeros
      (`fillGapWithZero` in their metric specifications), so an idle minute may come this way too: 0.
    - A point with `"average": x > 0`: requests in that minute (the arithmetic below).
    - NO point for a minute of the window, a series without points, a metric without any time series (what a
      dimension filter without data gives, Azure/azure-libraries-for-java#668; we send none), a result for another
      resource or none, another metric, unit, namespace or grain, an errorCode other than Success, a value that is
      not a finite number >= 0, or an aggregation we did not ask for (`total` alone, which the old code read): not
      understood, so in use.

The arithmetic (Average at PT1M)
    For one minute, Azure Monitor's Average is (sum of the samples emitted in that minute) / (their number n), across
    every dimension value and emitter, because the query does not split. Each sample counts whole requests, so the
    minute's requests R = average * n >= average (n >= 1 when a value is present), and, R being whole,
    R >= ceil(average); any average > 0 means R >= 1. We count `max(1, ceil(average))` for a minute with
    average > 0, 0 for a minute with average 0 or absent, and sum over the minutes of the window: a LOWER BOUND of the
    requests (exact when a minute has one sample), never 0 when a request was recorded. `last_request_at` is the start
    of the latest minute with average > 0.

Not verified without Azure
    - That an idle onlineEndpoint's RequestsPerMinute comes as timestamp-only points rather than an empty
      `timeseries` or no points (then every endpoint reads as in use: safe, costly, and logged).
    - How many samples a minute holds (per deployment and status code? per front end?): how low the estimate is.
    - Ingestion latency: the newest minutes may not be in yet and then read as absent or 0 (Azure/
      azure-libraries-for-net#499, Azure/azure-cli#6196), which no reading of the answer can tell from idleness.
    - How a per-resource failure appears in a getBatch answer (errorCode, or an HTTP error).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, Protocol

from shared.domain.errors import EngineError

ENDPOINT_METRICS_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
REQUESTS_PER_MINUTE = "RequestsPerMinute"
AGGREGATION = "Average"  # the only aggregation documented for RequestsPerMinute
GRAIN = timedelta(minutes=1)
GRAIN_ISO = "PT1M"
UNIT = "Count"
_OTHER_AGGREGATIONS = ("total", "count", "minimum", "maximum")  # not asked for: their presence is not understood
_METRIC_ID_INFIX = "/providers/microsoft.insights/metrics/"


class ActivityNotUnderstood(EngineError):
    """Azure Monitor answered something this module does not understand: the endpoint must count as in use."""

    code = "endpoint_activity_not_understood"


@dataclass(frozen=True)
class EndpointActivity:
    requests: int  # a lower bound, see the module docstring
    last_request_at: datetime | None  # start of the latest minute with a request; None when none in the window


class MetricsQuery(Protocol):
    """The part of azure.monitor.querymetrics.MetricsClient this module uses. `raw_response_hook` is azure-core's
    per-call hook (CustomHookPolicy): it receives the PipelineResponse whose body this module reads."""

    def query_resources(
        self,
        *,
        resource_ids: list[str],
        metric_namespace: str,
        metric_names: list[str],
        timespan: tuple[datetime, datetime],
        granularity: timedelta,
        aggregations: list[str],
        raw_response_hook: Callable[[Any], None],
    ) -> list[Any]: ...


def endpoint_activity(
    client: MetricsQuery, resource_id: str, window: timedelta, *, now: datetime | None = None
) -> EndpointActivity:
    """Requests to one endpoint over the `window` that ends `now` (default: the current time), and the start of the
    last minute that had any. Raises ActivityNotUnderstood for an answer it cannot read, and lets the SDK's
    HttpResponseError through (the engine translates it): either way the caller counts the endpoint as in use."""
    from azure.core.exceptions import AzureError

    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - window
    answers: list[Any] = []
    try:
        client.query_resources(
            resource_ids=[resource_id],
            metric_namespace=ENDPOINT_METRICS_NAMESPACE,
            metric_names=[REQUESTS_PER_MINUTE],
            timespan=(start, end),
            granularity=GRAIN,
            aggregations=[AGGREGATION],
            raw_response_hook=answers.append,
        )
    except AzureError:
        raise
    except Exception as exc:
        if not answers:
            raise  # nothing came back: our bug, not the service's answer
        # The SDK's own models choke on some answers (a point without timeStamp raises DeserializationError).
        _not_understood(resource_id, f"the SDK could not read it ({type(exc).__name__}: {exc})", exc)
    if not answers:
        _not_understood(resource_id, "no response reached raw_response_hook")
    return activity_from(_body_of(answers[-1], resource_id), resource_id, start, end)


def activity_from(body: Any, resource_id: str, start: datetime, end: datetime) -> EndpointActivity:
    """The activity in a metrics:getBatch answer `body` (parsed JSON) for `resource_id` over [start, end)."""

    def fail(reason: str) -> NoReturn:
        _not_understood(resource_id, reason)

    if not isinstance(body, dict):
        fail("the body is not an object")
    values = _expect(body, "values", list, fail)
    if len(values) != 1:
        fail(f"{len(values)} results for the one resource asked about")
    result = values[0]
    if not isinstance(result, dict):
        fail("the result is not an object")
    if result.get("resourceid") is not None and not _same_id(result["resourceid"], resource_id):
        fail(f"the result is for another resource ({result['resourceid']})")
    if result.get("namespace") is not None and str(result["namespace"]).lower() != ENDPOINT_METRICS_NAMESPACE.lower():
        fail(f"namespace {result['namespace']!r}")
    if result.get("interval") is not None and str(result["interval"]).upper() != GRAIN_ISO:
        fail(f"time grain {result['interval']!r}, not {GRAIN_ISO}")
    metrics = _expect(result, "value", list, fail)
    if len(metrics) != 1 or not isinstance(metrics[0], dict):
        fail(f"{len(metrics)} metrics, not one {REQUESTS_PER_MINUTE}")
    metric = metrics[0]
    error_code = metric.get("errorCode")
    if error_code is not None and str(error_code).lower() != "success":
        fail(f"errorCode {error_code!r} ({metric.get('errorMessage') or 'no message'})")
    name = metric.get("name")
    if not isinstance(name, dict) or str(name.get("value", "")).lower() != REQUESTS_PER_MINUTE.lower():
        fail(f"metric {name!r}, not {REQUESTS_PER_MINUTE}")
    metric_id = metric.get("id")
    if metric_id is None and result.get("resourceid") is None:
        fail("neither the result nor the metric names the resource")
    if metric_id is not None and not str(metric_id).lower().startswith(resource_id.lower() + _METRIC_ID_INFIX):
        fail(f"the metric is another resource's ({metric_id})")
    if str(metric.get("unit", "")).lower() != UNIT.lower():
        fail(f"unit {metric.get('unit')!r}, not {UNIT}")
    series = _expect(metric, "timeseries", list, fail)
    if not series:
        fail("no time series at all (an unsplit query answers an idle endpoint with points without values)")

    requests, last = 0, None
    for one in series:
        if not isinstance(one, dict):
            fail("a time series is not an object")
        for at, average in _minutes(_expect(one, "data", list, fail), start, end, fail):
            if average > 0:
                requests += max(1, math.ceil(average))
                last = at if last is None or at > last else last
    return EndpointActivity(requests=requests, last_request_at=last)


def _minutes(
    points: list[Any], start: datetime, end: datetime, fail: Callable[[str], NoReturn]
) -> list[tuple[datetime, float]]:
    """(minute, average) of one time series, an absent average read as 0; every whole minute of [start, end) must
    have its point: a minute without one was not reported, which is not the same as a minute without requests."""
    if not points:
        fail("a time series without data points")
    first_allowed = _floor_minute(start)
    seen: dict[datetime, float] = {}
    for point in points:
        if not isinstance(point, dict):
            fail(f"data point {point!r}")
        at = _timestamp(point.get("timeStamp"), fail)
        if at in seen:
            fail(f"two points for {at.isoformat()}")
        if not first_allowed <= at <= end:
            fail(f"a point at {at.isoformat()}, outside the window {start.isoformat()}/{end.isoformat()}")
        others = [key for key in _OTHER_AGGREGATIONS if point.get(key) is not None]
        average = point.get("average")
        if others:
            fail(f"{', '.join(others)} at {at.isoformat()}, an aggregation not asked for (average {average!r})")
        if average is None:
            seen[at] = 0.0  # no samples in this minute: no requests
            continue
        if isinstance(average, bool) or not isinstance(average, int | float) or not math.isfinite(average):
            fail(f"average {average!r} at {at.isoformat()}")
        if average < 0:
            fail(f"negative average {average!r} at {at.isoformat()}")
        seen[at] = float(average)
    minute = first_allowed if first_allowed == start else first_allowed + GRAIN  # the first whole minute
    while minute + GRAIN <= end:
        if minute not in seen:
            fail(f"no data point for {minute.isoformat()}")
        minute += GRAIN
    return sorted(seen.items())


def _timestamp(value: Any, fail: Callable[[str], NoReturn]) -> datetime:
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        fail(f"timeStamp {value!r}")
    if at.second or at.microsecond:
        fail(f"timeStamp {value!r} is not the start of a minute")
    return at.astimezone(UTC)


def _floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _expect(container: dict[str, Any], key: str, kind: type, fail: Callable[[str], NoReturn]) -> Any:
    value = container.get(key)
    if not isinstance(value, kind):
        fail(f"{key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


def _same_id(a: Any, b: str) -> bool:
    """Azure resource ids compare case-insensitively (the service may answer with another casing)."""
    return str(a).rstrip("/").lower() == b.rstrip("/").lower()


def _body_of(pipeline_response: Any, resource_id: str) -> Any:
    """The JSON body of the azure-core PipelineResponse the hook saw."""
    response = getattr(pipeline_response, "http_response", None)
    status = getattr(response, "status_code", None)
    if response is None or status != 200:
        _not_understood(resource_id, f"HTTP status {status}")
    try:
        return json.loads(response.text())
    except (ValueError, TypeError) as exc:
        _not_understood(resource_id, f"the body is not JSON ({exc})", exc)


def _not_understood(resource_id: str, reason: str, cause: BaseException | None = None) -> NoReturn:
    raise ActivityNotUnderstood(
        f"Azure Monitor's {REQUESTS_PER_MINUTE} answer for {resource_id} is not understood: {reason}"
    ) from cause


def metrics_endpoint(location: str) -> str:
    """The regional Azure Monitor metrics endpoint of a workspace's location, e.g. eastus: the form MetricsClient's
    docstring gives (https://eastus.metrics.monitor.azure.com); the resources queried must be in that region."""
    return f"https://{location.lower().replace(' ', '')}.metrics.monitor.azure.com"


class LazyMetricsClient:
    """Azure Monitor's MetricsClient for the workspace's region, made on first use (it needs the location)."""

    def __init__(self, workspace: Any, credential: Any) -> None:
        self._workspace, self._credential = workspace, credential
        self._client: MetricsQuery | None = None

    def query_resources(self, **query: Any) -> list[Any]:
        if self._client is None:
            from azure.monitor.querymetrics import MetricsClient

            location = self._workspace.workspaces.get(self._workspace.workspace_name).location
            self._client = MetricsClient(metrics_endpoint(location), self._credential)
        return self._client.query_resources(**query)
