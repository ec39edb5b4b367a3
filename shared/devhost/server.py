"""The dev host's HTTP server: werkzeug's threaded WSGI server on 127.0.0.1, and the WSGI app that hands each
request to the host as (method, target, headers, body) and writes its Reply.

werkzeug reads the body (Content-Length or Transfer-Encoding: chunked) and enforces the request size limit. Its
request log is kept quiet: the request line may carry `?code=<key>`, so only method and path are logged, at DEBUG.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from shared.devhost.replies import Reply

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's request limit (Consumption)
LISTEN_BACKLOG = 128  # connections the kernel queues before the server accepts them
WORKER_THREADS = 32  # requests served at once; more wait, accepted, for a free worker
IDLE_CONNECTION_S = 15  # a kept-alive connection that sends nothing for this long gives its worker back

Handle = Callable[[str, str, Mapping[str, str], bytes], Reply]  # (method, target, lower-cased headers, body)


class _Request(Request):
    # One byte of room: werkzeug ends a chunked body at max_content_length without a word, so a body that
    # reaches MAX_REQUEST_BYTES + 1 is the sign that it was longer than the limit.
    max_content_length = MAX_REQUEST_BYTES + 1


class _Response(Response):
    default_mimetype = None  # a Reply without Content-Type is sent without one


def wsgi_app(handle: Handle) -> WSGIApplication:
    """A WSGI app answering every request with `handle`'s Reply."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reply = _answer(_Request(environ), handle)
        return _Response(reply.body, reply.status, reply.headers)(environ, start_response)

    return app


def _answer(request: _Request, handle: Handle) -> Reply:
    length = request.headers.get("Content-Length")
    if length and not length.strip().isdigit():
        return Reply.error(400, "bad_request", f"invalid Content-Length {length!r}")
    too_large = Reply.error(413, "payload_too_large", f"the limit is {MAX_REQUEST_BYTES} bytes")
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        return too_large  # refused before reading
    try:
        body = request.get_data()
    except RequestEntityTooLarge:
        return too_large
    except (HTTPException, OSError) as exc:  # a malformed chunked body, a client that left mid-body
        return Reply.error(400, "bad_request", str(exc))
    if len(body) > MAX_REQUEST_BYTES:
        return too_large
    headers = {key.lower(): value for key, value in request.headers.items()}
    try:
        return handle(request.method, _target(request.environ), headers, body)
    except Exception:
        logger.exception("the dev host failed on %s %s", request.method, request.path)
        return Reply.error(500, "host_error", "the dev host failed; see its log")


def _target(environ: WSGIEnvironment) -> str:
    """Path and query as on the request line (still percent-encoded), as http.server gives them."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or "/"
    return str(raw).encode("latin-1").decode("utf-8", "replace")  # undo PEP 3333's latin-1 transport


class _QuietHandler(WSGIRequestHandler):
    server_version = "ft-autopilot-devhost"  # a class attribute: it shadows werkzeug's property the same way
    timeout = IDLE_CONNECTION_S

    def log(self, type: str, message: str, *args: Any) -> None:
        # The request line may carry ?code=<key>: log the path only, and only at DEBUG.
        path = urlsplit(self.path).path if getattr(self, "path", None) else "-"
        logger.debug("%s %s (%s)", getattr(self, "command", None) or "-", path, type)


class _Server(BaseWSGIServer):
    """werkzeug's server with a bounded pool of worker threads (werkzeug's own starts a thread a connection):
    connections beyond the pool wait their turn, accepted, instead of being reset."""

    multithread = True  # werkzeug then speaks HTTP/1.1, as its threaded server does

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._workers = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="devhost-http")
        super().__init__(*args, **kwargs)  # with fd=, werkzeug calls server_close on the socket it made itself

    def process_request(self, request: Any, client_address: Any) -> None:
        self._workers.submit(self._serve_connection, request, client_address)

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def shutdown(self) -> None:
        super().shutdown()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def log(self, type: str, message: str, *args: Any) -> None:
        logger.log(logging.ERROR if type == "error" else logging.DEBUG, message, *args)


def make_http_server(port: int, handle: Handle) -> BaseWSGIServer:
    """A server bound to 127.0.0.1:`port` (0: any free port), not yet serving; OSError if it cannot bind."""
    # Bound here, not by werkzeug: werkzeug answers a failed bind with sys.exit.
    with socket.create_server((HOST, port), backlog=LISTEN_BACKLOG) as listener:
        return _Server(HOST, listener.getsockname()[1], wsgi_app(handle), handler=_QuietHandler, fd=listener.fileno())
