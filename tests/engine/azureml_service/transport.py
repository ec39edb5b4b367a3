"""The wire between azure-ai-ml and the fake service: an azure-core RequestsTransport whose requests.Session never
opens a socket. Every request the SDK's real clients send (ARM, the registry's discovery and data plane, LRO polls)
reaches `Router.handle` as method, URL and body; the answer goes back as a requests.Response, so azure-core parses
it, maps errors and polls exactly as it does against Azure. Polls sleep briefly instead of the SDK's 5 s."""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

POLL_SLEEP_S = 0.02  # the SDK asks for 5 s between polls; the fake's state moves on its own clock


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def host(self) -> str:
        return urllib.parse.urlparse(self.url).netloc


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serializable, or bytes sent as they are; None sends no body
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


class _ServiceAdapter(BaseAdapter):
    """A requests adapter that answers from the fake instead of the network."""

    def __init__(self, handler: Handler, log: list[Request], lock: threading.Lock) -> None:
        super().__init__()
        self._handler, self._log, self._lock = handler, log, lock

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        parsed = urllib.parse.urlparse(request.url or "")
        raw = request.body
        if isinstance(raw, bytes | bytearray):
            raw = raw.decode()
        body = json.loads(raw) if raw else None
        incoming = Request(
            method=request.method or "GET",
            url=request.url or "",
            path=urllib.parse.unquote(parsed.path),
            query=dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
            headers=dict(request.headers),
            body=body,
        )
        with self._lock:
            self._log.append(incoming)
        answer = self._handler(incoming)
        response = requests.Response()
        response.status_code = answer.status
        response.reason = requests.status_codes._codes.get(answer.status, ("",))[0].upper()
        response.url = incoming.url
        response.request = request
        if answer.body is None:
            content = b""
        elif isinstance(answer.body, bytes):
            content = answer.body
        else:
            content = json.dumps(answer.body).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", **answer.headers}
        headers["Content-Length"] = str(len(content))
        response.headers = CaseInsensitiveDict(headers)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(content), headers=headers, status=answer.status, preload_content=False
        )
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


class ServiceTransport(RequestsTransport):
    """What MLClient(..., transport=...) and the registry client use to reach the fake."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[Request] = []
        session = requests.Session()
        adapter = _ServiceAdapter(handler, self.requests, threading.Lock())
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        super().__init__(session=session, session_owner=False)

    def sleep(self, duration: float) -> None:
        threading.Event().wait(min(duration, POLL_SLEEP_S))
