"""The router's calls to its deployment servers over loopback HTTP (httpx, one pooled async client).

A deployment's refusals (4xx, and 503: loading, deadline) pass through as RequestError with its code; anything else
it answers, a closed port or a dropped connection is a 502, and no answer within the deadline and a margin a 504.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from shared.engine.local.serving.protocol import GenerationRequest, RequestError

DEADLINE_MARGIN_S = 5.0  # the deployment enforces the deadline itself; this only catches one that hangs


@dataclass(frozen=True)
class Target:
    name: str
    port: int


class UpstreamError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Deployments:
    def __init__(self) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64), trust_env=False
        )

    async def close(self) -> None:
        await self._client.aclose()

    def _request(self, target: Target, request: GenerationRequest, deadline_s: float, stream: bool) -> httpx.Request:
        body = {
            "conversations": request.conversations,
            "parameters": request.parameters,
            "deadline_s": deadline_s,
            "stream": stream,
        }
        return self._client.build_request(
            "POST",
            f"http://127.0.0.1:{target.port}/generate",
            json=body,
            timeout=httpx.Timeout(deadline_s + DEADLINE_MARGIN_S, connect=5.0),
        )

    async def generate(self, target: Target, request: GenerationRequest, deadline_s: float) -> dict[str, Any]:
        try:
            response = await self._client.send(self._request(target, request, deadline_s, stream=False))
        except httpx.TimeoutException:
            raise _timeout(target, deadline_s) from None
        except httpx.HTTPError as exc:
            raise _unavailable(target, exc) from None
        answer = _json(response.content)
        if response.status_code == 200 and isinstance(answer, dict) and isinstance(answer.get("outputs"), list):
            return answer
        raise _refusal(target, response.status_code, answer)

    @asynccontextmanager
    async def stream(
        self, target: Target, request: GenerationRequest, deadline_s: float
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The deployment's NDJSON events, once it accepted the request (its refusal is raised before)."""
        try:
            response = await self._client.send(self._request(target, request, deadline_s, stream=True), stream=True)
        except httpx.TimeoutException:
            raise _timeout(target, deadline_s) from None
        except httpx.HTTPError as exc:
            raise _unavailable(target, exc) from None
        try:
            if response.status_code != 200:
                await response.aread()
                raise _refusal(target, response.status_code, _json(response.content))
            yield _events(response, target, deadline_s)
        finally:
            await response.aclose()


async def _events(response: httpx.Response, target: Target, deadline_s: float) -> AsyncIterator[dict[str, Any]]:
    try:
        async for line in response.aiter_lines():
            if line.strip():
                event = _json(line.encode("utf-8"))
                if isinstance(event, dict):
                    yield event
    except httpx.TimeoutException:
        raise _timeout(target, deadline_s) from None
    except httpx.HTTPError as exc:
        raise _unavailable(target, exc) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _timeout(target: Target, deadline_s: float) -> UpstreamError:
    return UpstreamError(
        504, "deployment_timeout", f"deployment {target.name} did not answer within {deadline_s:.0f} s"
    )


def _unavailable(target: Target, exc: Exception) -> UpstreamError:
    return UpstreamError(
        502, "deployment_unavailable", f"deployment {target.name} is not answering ({type(exc).__name__})"
    )


def _refusal(target: Target, status: int, answer: Any) -> Exception:
    error = answer.get("error") if isinstance(answer, dict) else None
    code = error.get("code", "deployment_error") if isinstance(error, dict) else "deployment_error"
    message = error.get("message", "") if isinstance(error, dict) else ""
    if 400 <= status < 500 or status == 503:
        return RequestError(code, message or f"deployment {target.name} refused the request", status)
    return UpstreamError(
        502, "deployment_error", f"deployment {target.name} failed (HTTP {status}): {message}".rstrip()
    )
