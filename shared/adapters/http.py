"""The app's one client for its own JSON-over-HTTP calls (scoring requests, MLflow's REST API, the local engine's
event webhook and readiness probes, the demo), over requests, with one account of what can go wrong.

Every failure is an HttpFailure that says which of four things happened: no answer in time, no connection, an
error status (with the start of its body), or an answer that is not JSON. Each caller maps that to its own
stable error code. The timeout bounds the connection and each read of the answer, as requests does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests

ERROR_BODY_CHARS = 2000


class HttpFailure(Exception):
    def __init__(
        self,
        url: str,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        timed_out: bool = False,
        not_json: bool = False,
    ) -> None:
        super().__init__(f"{url}: {message}")
        self.url, self.message, self.status, self.body = url, message, status, body
        self.timed_out, self.not_json = timed_out, not_json

    @property
    def unreachable(self) -> bool:
        """No answer at all (refused, reset, a name that does not resolve), not a timeout."""
        return self.status is None and not self.timed_out and not self.not_json

    @property
    def refused(self) -> bool:
        """A 4xx answer other than 429: asking again will not help."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


def post_json(
    url: str, payload: Any, *, headers: Mapping[str, str] | None = None, timeout_s: float, answer: bool = True
) -> Any:
    """POST `payload` as JSON (bytes are sent as they are) and return the parsed answer (None for an empty one, or
    when `answer` is False: a webhook's body is not read)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    return _call("POST", url, data=data, headers=headers, timeout_s=timeout_s, answer=answer)


def get_json(url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float) -> Any:
    return _call("GET", url, data=None, headers=dict(headers or {}), timeout_s=timeout_s, answer=True)


def get_bytes(url: str, *, timeout_s: float) -> tuple[int, bytes]:
    """The status and body of a GET, whatever the status (a readiness probe reads both)."""
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.Timeout as exc:
        raise HttpFailure(url, f"no answer within {timeout_s:g} s", timed_out=True) from exc
    except requests.RequestException as exc:
        raise HttpFailure(url, f"no connection ({exc})") from exc
    return response.status_code, response.content


def _call(method: str, url: str, *, data: bytes | None, headers: dict[str, str], timeout_s: float, answer: bool) -> Any:
    try:
        response = requests.request(method, url, data=data, headers=headers, timeout=timeout_s)
    except requests.Timeout as exc:
        raise HttpFailure(url, f"no answer within {timeout_s:g} s", timed_out=True) from exc
    except requests.RequestException as exc:
        raise HttpFailure(url, f"no connection ({exc})") from exc
    if response.status_code >= 400:
        body = response.text[:ERROR_BODY_CHARS]
        raise HttpFailure(url, f"HTTP {response.status_code} {body}".strip(), status=response.status_code, body=body)
    if not answer or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise HttpFailure(url, "the answer is not JSON", status=response.status_code, not_json=True) from exc
