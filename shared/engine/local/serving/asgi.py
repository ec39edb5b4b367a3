"""What the router and the deployment server share on their ASGI stack (starlette under uvicorn, loopback only).

- `serve`: binds 127.0.0.1:port first (a port in use ends the process with EXIT_PORT_IN_USE), then runs uvicorn on
  that socket until SIGTERM or Ctrl-C (uvicorn's own handlers: in-flight requests get a short grace period).
- `read_json`: a body read only when its declared length is within a limit (411 without one, 413 over it, neither
  read); a refused body's connection is closed after the answer.
- JSON answers and errors as {"error": {"code", "message"}}, for every failure, unknown routes and methods included.
- `RequestLog`: one log line per request (method, path without query, status, milliseconds), never headers or
  bodies; probes (GET / and /health) at DEBUG only.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.engine.local.serving.protocol import RequestError, error_body

EXIT_PORT_IN_USE = 3  # a server process's exit status when its port is taken
KEEP_ALIVE_S = 120  # an idle keep-alive connection is closed after this
GRACEFUL_SHUTDOWN_S = 3
PROBE_PATHS = frozenset({"/", "/health"})


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return json_response(status, error_body(code, message), headers)


def refusal(exc: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if exc.status in (411, 413):
        extra["Connection"] = "close"  # the body was not read: the connection cannot carry another request
    if exc.status == 429:
        extra.setdefault("Retry-After", "1")
    return error_response(exc.status, exc.code, exc.message, extra)


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; RequestError 411/413/400 when it has no length, is too large or is not JSON;
    ClientDisconnect when the client hangs up before sending all of it."""
    if request.headers.get("transfer-encoding"):
        raise RequestError("length_required", "chunked bodies are not supported: send Content-Length", 411)
    declared = request.headers.get("content-length")
    if declared is None:
        raise RequestError("length_required", "a Content-Length header is required", 411)
    try:
        length = int(declared)
    except ValueError:
        raise RequestError("invalid_request", "Content-Length is not a number") from None
    if length < 0:
        raise RequestError("invalid_request", "Content-Length is negative")
    if length > limit:
        raise RequestError("payload_too_large", f"the body is {length} bytes; the limit is {limit} bytes", 413)
    raw = await request.body()
    if len(raw) < length:
        raise ClientDisconnect()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError("invalid_json", f"the body is not valid JSON: {exc}") from None


async def until_disconnected(receive: Receive) -> None:
    """Returns when the client hangs up. Only for a request whose body was read already (it reads what follows)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: asyncio.Future[Any] | asyncio.Task[Any]) -> Any:
    """`work`'s result; ClientDisconnect (and `work` cancelled) when the client hangs up first."""
    watcher = asyncio.ensure_future(until_disconnected(request.receive))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not work.done():
        work.cancel()
        raise ClientDisconnect()
    return work.result()


class StreamingAnswer(StreamingResponse):
    """A streamed answer whose `cleanup` runs however the response ends: finished, failed, or never begun (a client
    that hangs up before the first chunk: the body's generator then never runs, nor its `finally`)."""

    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        media_type: str,
        cleanup: Callable[[], Awaitable[None]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


class RequestLog:
    """ASGI middleware: one line per HTTP request with its status and duration (`note` from scope["state"])."""

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            path, method = scope.get("path", ""), scope.get("method", "")
            note = scope.get("state", {}).get("note", "")
            level = logging.DEBUG if method == "GET" and path in PROBE_PATHS else logging.INFO
            elapsed_ms = (time.monotonic() - started) * 1000
            outcome = status or "disconnected"
            self.logger.log(
                level, "%s %s -> %s in %.0f ms%s", method, path, outcome, elapsed_ms, f" ({note})" * bool(note)
            )


def note(request: Request, text: str) -> None:
    """A few words for the request's log line (never a header or a body)."""
    request.scope.setdefault("state", {})["note"] = text


def route_error(path: str, method: str, routes: Mapping[str, tuple[str, ...]]) -> Response:
    """The answer for a request no route takes: 405 with Allow for a known path, 501 for a method HTTP servers do
    not serve here, 404 otherwise."""
    if method not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        return error_response(501, "unsupported_method", f"method {method} is not supported")
    allowed = routes.get(path)
    if allowed:
        return error_response(
            405, "method_not_allowed", f"{path} takes {' or '.join(allowed)}", {"Allow": ", ".join(allowed)}
        )
    return error_response(404, "not_found", f"no route {path}")


def start_server_process() -> None:
    """A server process's start: INFO logs on stderr (uvicorn's own at WARNING: we log each request once)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def bind(port: int, logger: logging.Logger) -> socket.socket | None:
    """A listening socket on 127.0.0.1:port; None, logged, when the port is in use."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            logger.error("port %d is already in use", port)
            return None
        raise
    sock.listen(256)
    sock.set_inheritable(True)
    return sock


def serve(app: ASGIApp, sock: socket.socket, *, on_server: Callable[[uvicorn.Server], None] | None = None) -> None:
    """Run `app` on `sock` until SIGTERM or Ctrl-C (or `server.should_exit`)."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        http="h11",
        loop="asyncio",
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        date_header=True,
    )
    server = uvicorn.Server(config)
    if on_server is not None:
        on_server(server)
    server.run(sockets=[sock])
