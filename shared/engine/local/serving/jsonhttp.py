"""A small JSON-over-HTTP server on the standard library, shared by the router and the deployment server.

Stdlib `http.server` starts in milliseconds and needs nothing beyond Python. What it adds to BaseHTTPRequestHandler:
- JSON responses with Content-Length (HTTP/1.1 keep-alive), errors as {"error": {"code", "message"}}, for every
  failure including the ones http.server itself reports (bad request line, unsupported method);
- bodies read only when their declared length is within a limit; a refused body is never read into memory: the
  connection is closed after the answer, with a short "lingering close" that discards what the client still sends
  so that it receives the answer instead of a reset;
- one log line per request (method, path without query, status, milliseconds), never headers or bodies; probes
  (GET / and /health) at DEBUG only.
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from shared.engine.local.serving.protocol import RequestError, error_body

LINGER_S = 2.0
LINGER_MAX_BYTES = 64 * 1024 * 1024
EXIT_PORT_IN_USE = 3  # a server process's exit status when its port is taken


class JsonServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


Server = TypeVar("Server", bound=JsonServer)


def start_server_process() -> None:
    """A server process's start: INFO logs on stderr, and SIGTERM raised as SystemExit, so that `serve` returns."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    signal.signal(signal.SIGTERM, _raise_exit)


def bind(make: Callable[[], Server], port: int, logger: logging.Logger) -> Server | None:
    """The server `make` builds on `port`; None, logged, when the port is in use (exit with EXIT_PORT_IN_USE)."""
    try:
        return make()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            logger.error("port %d is already in use", port)
            return None
        raise


def serve(server: JsonServer, logger: logging.Logger, name: str) -> bool:
    """Serve until SIGTERM or Ctrl-C (True, "`name` stopping" logged) or until `shutdown()` (False); closed after."""
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        logger.info("%s stopping", name)
        return True
    finally:
        server.server_close()
    return False


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ft-autopilot-local/1"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this
    probe_paths: frozenset[str] = frozenset({"/", "/health"})  # liveness/readiness probes: logged at DEBUG only
    disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall between them
    logger = logging.getLogger(__name__)

    def setup(self) -> None:
        super().setup()
        self._body_consumed = False
        self._status = 0
        self._started = time.monotonic()
        self._note = ""

    # -- reading ----------------------------------------------------------------------------------

    def read_json(self, limit: int) -> Any:
        """The body parsed as JSON; RequestError 411/413/400 when it has no length, is too large or is not JSON."""
        raw = self.read_body(limit)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError("invalid_json", f"the body is not valid JSON: {exc}") from None

    def read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise RequestError("length_required", "chunked bodies are not supported: send Content-Length", 411)
        declared = self.headers.get("Content-Length")
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
        data = self.rfile.read(length) if length else b""
        self._body_consumed = True
        if len(data) < length:
            raise ConnectionError("the client closed the connection before sending the whole body")
        return data

    # -- writing ----------------------------------------------------------------------------------

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        unread = not self._body_consumed and self._declares_body()
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if unread:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        if unread:
            self._linger()

    def send_error_json(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, error_body(code, message), headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, unsupported method, ...) as JSON too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.close_connection = True
        self._body_consumed = True  # nothing sensible to drain after a malformed request
        self.send_json(code, error_body(phrase.lower().replace(" ", "_"), message or phrase))

    def _declares_body(self) -> bool:
        headers = getattr(self, "headers", None)
        if headers is None:
            return False
        if headers.get("Transfer-Encoding"):
            return True
        try:
            return int(headers.get("Content-Length", "0")) > 0
        except ValueError:
            return True

    def _linger(self) -> None:
        """Half-close, then discard what the client still sends (bounded), so it reads our answer, not a reset."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + LINGER_S
            drained = 0
            while time.monotonic() < deadline and drained < LINGER_MAX_BYTES:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    # -- logging ----------------------------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Replaced by `log_done` (one line per request with its duration)."""

    def log_message(self, format: str, *args: Any) -> None:
        self.logger.debug("http.server: " + format, *args)

    def log_done(self) -> None:
        path = (self.path or "").split("?", 1)[0]
        elapsed_ms = (time.monotonic() - self._started) * 1000
        note = f" ({self._note})" if self._note else ""
        level = logging.DEBUG if self.command == "GET" and path in self.probe_paths else logging.INFO
        self.logger.log(level, "%s %s -> %s in %.0f ms%s", self.command, path, self._status, elapsed_ms, note)

    def handle_one_request(self) -> None:
        self._body_consumed = False
        self._status = 0
        self._note = ""
        self._started = time.monotonic()
        super().handle_one_request()
        if self._status and getattr(self, "command", None):
            self.log_done()
