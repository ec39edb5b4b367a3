"""What the fake service serves besides ARM: endpoints' scoring URIs (real HTTP on loopback) and Azure Monitor's
RequestsPerMinute for them (answered through the same transport as the ARM calls, in the metrics:getBatch shape of
tests/fixtures/azure-monitor/, one point per minute, `average` absent for a minute without requests)."""

from __future__ import annotations

import copy
import json
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.engine.azureml_service.service import AzureMLService

MONITOR_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "azure-monitor"


class ScoringServer:
    """Every endpoint's scoring URI: POST /<endpoint>/score with the key, answered by the deployment the header
    pins or the one with all the traffic, in the generic MLflow scorer's shape [{"0": text}]."""

    def __init__(self, service: AzureMLService) -> None:
        self.service = service
        self.requests: dict[str, list[datetime]] = defaultdict(list)
        self.pinned: list[str | None] = []
        self.answer_after_s = 0.0  # how long every answer takes
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Started on first use, bound to loopback."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                endpoint_name = self.path.strip("/").split("/")[0]
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, answer = server.answer(endpoint_name, self.headers, body)
                threading.Event().wait(server.answer_after_s)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def answer(self, endpoint_name: str, headers: Any, body: dict[str, Any]) -> tuple[int, Any]:
        service = self.service
        with service.lock:
            keys = service.keys.get(endpoint_name)
            endpoint = service.endpoints.get(endpoint_name)
            if endpoint is None or keys is None:
                return 404, {"message": "no such endpoint"}
            if headers.get("Authorization") not in (f"Bearer {keys['primaryKey']}", f"Bearer {keys['secondaryKey']}"):
                return 401, {"message": "invalid key"}
            if not isinstance(body.get("input_data", {}).get("input_string"), list):
                return 400, {"message": "input_data.input_string must be a list"}
            traffic = endpoint["properties"]["traffic"]
            pinned = headers.get("azureml-model-deployment")
            serving = pinned or max(traffic, key=traffic.get, default=None)
            deployment = service.deployments.get(endpoint_name, {}).get(serving or "")
            if deployment is None or (not pinned and traffic.get(serving, 0) == 0):
                return 404, {"message": "no deployment to route to"}
            self.pinned.append(pinned)
            self.requests[endpoint_name].append(datetime.now(UTC))
            text = "" if serving in service.silent_deployments else f"Hello from {serving}."
            conversations = body["input_data"]["input_string"]
            several = bool(conversations) and isinstance(conversations[0], list)
            # the generic MLflow scorer answers one {"0": text} per input row: one row per conversation
            return 200, [{"0": text} for _ in (conversations if several else [conversations])]


class FakeMetrics:
    """Azure Monitor's metrics:getBatch for RequestsPerMinute, counted from the requests the scoring server really
    received. `unavailable` answers 503."""

    def __init__(self, service: AzureMLService) -> None:
        self.service = service
        self.unavailable = False
        self._template = json.loads((MONITOR_FIXTURES / "getbatch-idle.json").read_text(encoding="utf-8"))

    def client(self) -> Any:
        from azure.monitor.querymetrics import MetricsClient

        from shared.engine.azureml.monitoring import metrics_endpoint

        return MetricsClient(metrics_endpoint("eastus"), self.service.credential, transport=self.service.transport)

    def get_batch(self, query: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        self.service.record("metrics.query_resources", ",".join(body.get("resourceids", [])))
        if self.unavailable:
            return 503, {"error": {"code": "ServiceUnavailable", "message": "Azure Monitor is unavailable"}}
        start = _parse(query["starttime"])
        end = _parse(query["endtime"])
        answer = copy.deepcopy(self._template)
        template = answer["values"][0]
        values = []
        for resource_id in body.get("resourceids", []):
            name = resource_id.rstrip("/").rsplit("/", 1)[-1]
            per_minute: dict[datetime, int] = defaultdict(int)
            for at in self.service.scoring.requests.get(name, []):
                per_minute[at.replace(second=0, microsecond=0)] += 1
            points = []
            minute = start.replace(second=0, microsecond=0)
            while minute < end:
                point: dict[str, Any] = {"timeStamp": minute.strftime("%Y-%m-%dT%H:%M:%SZ")}
                if per_minute.get(minute):
                    point["average"] = float(per_minute[minute])
                points.append(point)
                minute += timedelta(minutes=1)
            value = copy.deepcopy(template)
            value.update(starttime=query["starttime"], endtime=query["endtime"], resourceid=resource_id)
            metric = value["value"][0]
            metric["id"] = f"{resource_id}/providers/Microsoft.Insights/metrics/RequestsPerMinute"
            metric["timeseries"][0]["data"] = points
            values.append(value)
        answer["values"] = values
        return 200, answer


def _parse(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
