"""Idle detection reads Azure Monitor strictly: the real MetricsClient, a transport that answers getBatch requests
with bodies in the service's shape (tests/fixtures/azure-monitor/), and a credential that hands out a fake token.
Nothing here opens a socket."""

from __future__ import annotations

import copy
import io
import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.monitor.querymetrics import MetricsClient
from requests.adapters import BaseAdapter

from shared.domain.errors import EngineError
from shared.engine.azureml.monitoring import (
    ActivityNotUnderstood,
    EndpointActivity,
    endpoint_activity,
    metrics_endpoint,
)
from shared.engine.azureml.sdk_errors import translated

FIXTURES = Path(__file__).parents[1] / "fixtures" / "azure-monitor"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
ENDPOINT_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ftap/providers/Microsoft.MachineLearningServices"
    "/workspaces/mlw-ftap/onlineEndpoints/ep-default-1a2b3c"
)
OTHER_ID = ENDPOINT_ID.replace("ep-default-1a2b3c", "ep-other-4d5e6f")
NOW = datetime(2025, 6, 2, 10, 5, 30, tzinfo=UTC)  # the fixtures cover the 5 minutes before it
WINDOW = timedelta(minutes=5)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def first_point(body: dict[str, Any], index: int = 1) -> dict[str, Any]:
    return body["values"][0]["value"][0]["timeseries"][0]["data"][index]


class AzureMonitor(BaseAdapter):
    """Answers every request with one canned HTTP response and keeps what was sent."""

    def __init__(self, body: Any, status: int = 200, content_type: str = "application/json") -> None:
        super().__init__()
        self.content = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.status, self.content_type = status, content_type
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        self.sent.append(request)
        headers = {"Content-Type": self.content_type, "Content-Length": str(len(self.content))}
        response = requests.Response()
        response.status_code, response.url, response.request = self.status, request.url or "", request
        response.headers.update(headers)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(self.content), headers=headers, status=self.status, preload_content=False
        )
        return response

    def close(self) -> None:
        pass


class FakeCredential:
    """A TokenCredential: the token is a placeholder, the scopes are kept for the assertions."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("fake-token", int(NOW.timestamp()) + 3600 * 24 * 365 * 100)


def client_for(monitor: AzureMonitor, credential: FakeCredential | None = None) -> MetricsClient:
    session = requests.Session()
    session.mount("https://", monitor)
    transport = RequestsTransport(session=session, session_owner=False)
    return MetricsClient(metrics_endpoint("eastus"), credential or FakeCredential(), transport=transport, retry_total=0)


def activity(body: Any, **answer: Any) -> EndpointActivity:
    return endpoint_activity(client_for(AzureMonitor(body, **answer)), ENDPOINT_ID, WINDOW, now=NOW)


def test_requests_in_two_minutes_are_counted_and_the_later_minute_is_the_last_request():
    # given averages of 1.0 at 10:01 and 1.5 at 10:03, the other minutes without samples
    body = fixture("getbatch-requests-in-two-minutes.json")

    # when the activity is read
    result = activity(body)

    # then each minute counts at least ceil(average) requests: 1 + 2, and 10:03 is the last minute with any
    assert result == EndpointActivity(requests=3, last_request_at=datetime(2025, 6, 2, 10, 3, tzinfo=UTC))


def test_an_idle_endpoint_as_the_service_answers_it_has_no_requests():
    # given the answer for an idle endpoint: one series, a point per minute, none with a value
    body = fixture("getbatch-idle.json")

    # when the activity is read
    result = activity(body)

    # then it had no requests
    assert result == EndpointActivity(requests=0, last_request_at=None)


def test_minutes_whose_average_is_zero_have_no_requests():
    # given every minute with samples of zero requests (gaps filled with zeros)
    body = fixture("getbatch-idle-zero-filled.json")

    # when the activity is read
    result = activity(body)

    # then it had no requests
    assert result == EndpointActivity(requests=0, last_request_at=None)


@pytest.mark.parametrize(
    ("average", "requests_counted"),
    [(0.2, 1), (1e-12, 1), (1.0, 1), (2.0000000001, 3), (2.5, 3), (7, 7)],
)
def test_a_minute_counts_at_least_one_request_for_any_positive_average(average: float, requests_counted: int):
    # given one minute whose average is `average`
    body = fixture("getbatch-idle.json")
    first_point(body, 2)["average"] = average

    # when the activity is read
    result = activity(body)

    # then that minute counts max(1, ceil(average)): never 0 for a recorded request
    assert result == EndpointActivity(requests_counted, datetime(2025, 6, 2, 10, 2, tzinfo=UTC))


def test_a_metric_without_time_series_counts_as_in_use():
    # given the metric with an empty list of time series
    body = fixture("getbatch-empty-timeseries.json")

    # when the activity is read, then it is not understood
    with pytest.raises(ActivityNotUnderstood, match="no time series at all"):
        activity(body)


def _other_resource(body: dict[str, Any]) -> None:
    body["values"][0]["resourceid"] = OTHER_ID


def _other_resource_metric(body: dict[str, Any]) -> None:
    del body["values"][0]["resourceid"]
    metric = body["values"][0]["value"][0]
    metric["id"] = metric["id"].replace(ENDPOINT_ID, OTHER_ID)


def _no_result(body: dict[str, Any]) -> None:
    body["values"] = []


def _two_results(body: dict[str, Any]) -> None:
    other = copy.deepcopy(body["values"][0])
    other["resourceid"] = OTHER_ID
    body["values"].append(other)


def _nameless(body: dict[str, Any]) -> None:
    del body["values"][0]["resourceid"]
    del body["values"][0]["value"][0]["id"]


def _metric(key: str, value: Any):
    def change(body: dict[str, Any]) -> None:
        body["values"][0]["value"][0][key] = value

    return change


def _result(key: str, value: Any):
    def change(body: dict[str, Any]) -> None:
        body["values"][0][key] = value

    return change


# (a change to the idle answer, what the error says): an answer for another resource, or for none
NOT_FOR_THE_ENDPOINT = [
    (_other_resource, "the result is for another resource"),
    (_other_resource_metric, "the metric is another resource's"),
    (_no_result, "0 results for the one resource"),
    (_two_results, "2 results for the one resource"),
    (_nameless, "neither the result nor the metric names the resource"),
]
# ... and an answer with an error status, or another metric, unit, time grain or namespace than was asked for
NOT_WHAT_WAS_ASKED_FOR = [
    (_metric("errorCode", "Throttled"), "errorCode 'Throttled'"),
    (_metric("unit", "CountPerSecond"), "unit 'CountPerSecond'"),
    (_metric("name", {"value": "RequestLatency"}), "metric .*RequestLatency"),
    (_result("interval", "PT5M"), "time grain 'PT5M'"),
    (_result("namespace", "microsoft.machinelearningservices/workspaces"), "namespace"),
    (_metric("timeseries", [{"metadatavalues": [], "data": []}]), "a time series without data points"),
    (_metric("timeseries", None), "the SDK could not read it"),
]


@pytest.mark.parametrize(("change", "reason"), [*NOT_FOR_THE_ENDPOINT, *NOT_WHAT_WAS_ASKED_FOR])
def test_an_answer_not_for_the_endpoint_or_not_what_was_asked_for_counts_as_in_use(change, reason: str):
    # given an idle-looking answer that is for another resource (or for none), or with one thing that is not
    # what was asked for
    body = fixture("getbatch-idle.json")
    change(body)

    # when the activity is read, then it is not understood
    with pytest.raises(ActivityNotUnderstood, match=reason):
        activity(body)


def test_the_resource_id_compares_without_case():
    # given the service answering with the resource id in lower case
    body = fixture("getbatch-idle.json")
    body["values"][0]["resourceid"] = ENDPOINT_ID.lower()
    metric = body["values"][0]["value"][0]
    metric["id"] = metric["id"].lower()

    # when the activity is read, then it is the endpoint's
    assert activity(body) == EndpointActivity(requests=0, last_request_at=None)


def test_a_total_only_answer_is_not_taken_for_idleness():
    # given points with totals and no averages: what the old code read, not the aggregation asked for
    body = fixture("getbatch-total-only.json")

    # when the activity is read, then it is not understood (the old code's `point.total or 0` would have counted 6,
    # and an answer with empty totals would have read as idle)
    with pytest.raises(ActivityNotUnderstood, match=r"total at 2025-06-02T10:01:00.*not asked for"):
        activity(body)


@pytest.mark.parametrize("extra", ["count", "minimum", "maximum"])
def test_any_aggregation_not_asked_for_is_not_understood(extra: str):
    # given a minute without an average but with another aggregation
    body = fixture("getbatch-idle.json")
    first_point(body)[extra] = 0.0

    # when the activity is read, then it is not understood
    with pytest.raises(ActivityNotUnderstood, match=f"{extra} at .* not asked for"):
        activity(body)


@pytest.mark.parametrize("value", [-1.0, "3", True, {"requests": 3}, [1.0]])
def test_values_that_are_not_request_counts_count_as_in_use(value: Any):
    # given one minute whose average is not a number >= 0
    body = fixture("getbatch-idle.json")
    first_point(body)["average"] = value

    # when the activity is read, then it is not understood
    with pytest.raises(ActivityNotUnderstood, match=r"average .* at 2025-06-02T10:01:00"):
        activity(body)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity"])
def test_non_finite_averages_count_as_in_use(literal: bytes):
    # given one minute whose average is a JSON literal Python reads as a non-finite float
    text = json.dumps(fixture("getbatch-idle.json")).encode()
    body = text.replace(
        b'{"timeStamp": "2025-06-02T10:01:00Z"}', b'{"timeStamp": "2025-06-02T10:01:00Z", "average": ' + literal + b"}"
    )
    assert body != text

    # when the activity is read, then it is not understood
    with pytest.raises(ActivityNotUnderstood, match=r"average (nan|inf)"):
        activity(body)


def test_a_minute_without_a_data_point_is_not_a_minute_without_requests():
    # given an idle answer that has no point at all for 10:03
    body = fixture("getbatch-idle.json")
    del body["values"][0]["value"][0]["timeseries"][0]["data"][3]

    # when the activity is read, then it is not understood: the minute was not reported
    with pytest.raises(ActivityNotUnderstood, match="no data point for 2025-06-02T10:03:00"):
        activity(body)


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [("2025-06-02T09:58:00Z", "outside the window"), ("2025-06-02T10:01:30Z", "not the start of a minute")],
)
def test_points_outside_the_window_or_between_minutes_are_not_understood(stamp: str, reason: str):
    # given a point whose time is not one of the window's minutes
    body = fixture("getbatch-idle.json")
    body["values"][0]["value"][0]["timeseries"][0]["data"].append({"timeStamp": stamp})

    # when the activity is read, then it is not understood
    with pytest.raises(ActivityNotUnderstood, match=reason):
        activity(body)


def test_a_point_the_sdk_cannot_read_counts_as_in_use():
    # given a point without timeStamp (the SDK's own model raises DeserializationError on it)
    body = fixture("getbatch-requests-in-two-minutes.json")
    del first_point(body)["timeStamp"]

    # when the activity is read, then it is not understood, rather than an error the engine takes for a bug
    with pytest.raises(ActivityNotUnderstood, match="the SDK could not read it"):
        activity(body)


def test_an_http_error_reaches_the_engine_as_an_engine_error():
    # given Azure Monitor refusing the query
    client = client_for(AzureMonitor({"error": {"code": "BadRequest", "message": "Invalid aggregation"}}, status=400))

    # when the engine reads the activity inside its SDK error translation
    with pytest.raises(EngineError) as raised, translated("read the request metrics of endpoint ep-default-1a2b3c"):
        endpoint_activity(client, ENDPOINT_ID, WINDOW, now=NOW)

    # then it gets an EngineError (which it counts as in use) made from the SDK's HttpResponseError
    assert raised.value.code == "azureml_request_rejected"
    assert isinstance(raised.value.__cause__, HttpResponseError)


def test_a_body_that_is_not_json_counts_as_in_use():
    # given a proxy's HTML page where the JSON answer should be
    body = b"<html>502 Bad Gateway</html>"

    # when the activity is read, then it is not understood
    with pytest.raises(ActivityNotUnderstood, match="the SDK could not read it"):
        activity(body, content_type="text/html")


def test_not_understood_is_an_engine_error_the_engine_counts_as_in_use():
    # given an answer that is not understood
    body = fixture("getbatch-empty-timeseries.json")

    # when the engine reads it inside its SDK error translation
    with pytest.raises(EngineError) as raised, translated("read the request metrics of endpoint ep-default-1a2b3c"):
        activity(body)

    # then the error passes through as is, with a stable code and the reason for the log
    assert isinstance(raised.value, ActivityNotUnderstood)
    assert raised.value.code == "endpoint_activity_not_understood"
    assert raised.value.message == (
        f"Azure Monitor's RequestsPerMinute answer for {ENDPOINT_ID} is not understood: no time series at all "
        "(an unsplit query answers an idle endpoint with points without values)"
    )


def test_the_request_asks_for_the_average_of_requests_per_minute_at_one_minute_grain():
    # given Azure Monitor answering for an idle endpoint
    monitor, credential = AzureMonitor(fixture("getbatch-idle.json")), FakeCredential()

    # when the activity is read
    endpoint_activity(client_for(monitor, credential), ENDPOINT_ID, WINDOW, now=NOW)

    # then one getBatch request went to the region's host with the metric, namespace, aggregation, grain and window
    (sent,) = monitor.sent
    url = urllib.parse.urlsplit(sent.url)
    assert (sent.method, url.scheme, url.netloc) == ("POST", "https", "eastus.metrics.monitor.azure.com")
    assert url.path == f"/subscriptions/{SUBSCRIPTION}/metrics:getBatch"
    assert dict(urllib.parse.parse_qsl(url.query)) == {
        "api-version": "2024-02-01",
        "metricnamespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "metricnames": "RequestsPerMinute",
        "aggregation": "Average",
        "interval": "PT1M",
        "starttime": "2025-06-02T10:00:30.000Z",
        "endtime": "2025-06-02T10:05:30.000Z",
    }
    assert json.loads(sent.body) == {"resourceids": [ENDPOINT_ID]}
    assert sent.headers["Authorization"] == "Bearer fake-token"
    assert credential.scopes == [("https://metrics.monitor.azure.com/.default",)]


@pytest.mark.parametrize(
    ("location", "endpoint"),
    [
        ("eastus", "https://eastus.metrics.monitor.azure.com"),
        ("West Europe", "https://westeurope.metrics.monitor.azure.com"),
    ],
)
def test_the_metrics_endpoint_is_the_regional_host_of_the_workspace_location(location: str, endpoint: str):
    # given a workspace location as ARM or the portal writes it
    # when the metrics endpoint is made from it, then it is the form MetricsClient documents
    assert metrics_endpoint(location) == endpoint
