"""The DevHost: indexes the app, starts storage (Azurite unless a connection is configured), serves HTTP, polls
blobs and runs timers; stop() undoes it all. `serve` runs one until told to stop."""

from __future__ import annotations

import logging
import threading
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import azure.functions as func
from azure.storage.blob import BlobServiceClient, ExponentialRetry
from pydantic import SecretStr

from shared.adapters.azurite import Azurite, start_azurite
from shared.context import AppContext, install_context
from shared.devhost.admin import FUNCTIONS_PATH, AdminApi
from shared.devhost.blob_poller import POISON_BLOB_THRESHOLD, BlobPoller, BlobReceipts
from shared.devhost.blobs import BlobWatch, deliver_blob
from shared.devhost.eventgrid import WEBHOOK_PATH, EventGridWebhooks, local_engine_webhook
from shared.devhost.indexing import DevHostError, HostedFunction, host_route_prefix, hosted_functions
from shared.devhost.keys import admits, dashboard_key, function_key
from shared.devhost.replies import Reply, unauthorized
from shared.devhost.routes import HttpFunctions
from shared.devhost.server import HOST, make_http_server
from shared.devhost.timers import invoke_timer, run_timer
from shared.settings import Settings
from shared.ui.auth import UI_PATH, DashboardAuth

if typing.TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

    from shared.engine.base import Engine

logger = logging.getLogger(__name__)

WEBHOOK_PATHS = (WEBHOOK_PATH, "/runtime/webhooks/blobs")


@dataclass(frozen=True)
class _Endpoints:
    """What answers requests, once the host is bound and its storage is up."""

    http: HttpFunctions
    webhooks: EventGridWebhooks
    admin: AdminApi


class DevHost:
    """Hosts function_app on 127.0.0.1:`port`. start() returns once everything listens; stop() undoes it all."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int = 7071,
        azurite_location: Path | None = None,
        engine_factory: Callable[[], Engine] | None = None,
        app: func.FunctionApp | None = None,
        blob_poll_interval_s: float = 1.0,
        poison_blob_threshold: int = POISON_BLOB_THRESHOLD,
        announce: Callable[[str], None] | None = print,
    ) -> None:
        self.settings = settings
        self.port = port
        self.function_key = function_key(settings)
        self.dashboard_key = dashboard_key(settings)
        self.connection_string: str | None = (
            settings.storage_connection_string.get_secret_value() if settings.storage_connection_string else None
        )
        self._azurite_location = azurite_location
        self._engine_factory = engine_factory
        self._app = app
        self._poll_interval_s = blob_poll_interval_s
        self._poison_threshold = poison_blob_threshold
        self._announce = announce or (lambda line: None)
        self._functions: dict[str, HostedFunction] = {}
        self._watches: list[BlobWatch] = []
        self._pollers: list[BlobPoller] = []
        self._endpoints: _Endpoints | None = None
        self._azurite: Azurite | None = None
        self._server: BaseWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._blob_service: BlobServiceClient | None = None
        self._started = False

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def receipts_path(self) -> Path:
        """Where the blob poller keeps its receipts: one per (function, blob, ETag) delivered or given up on."""
        return self.settings.local_state_dir / "devhost" / "blob-receipts.json"

    @property
    def functions(self) -> Mapping[str, HostedFunction]:
        return dict(self._functions)

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> DevHost:
        if self._started:
            raise DevHostError("this DevHost was already started")
        self._started = True
        try:
            self._index()
            self._server = make_http_server(self.port, self.handle)
            self.port = self._server.port
            self._start_storage()
            self._spawn("devhost-http", self._server.serve_forever, 0.1)
            for poller in self._pollers:
                self._spawn(f"devhost-blob-{poller.watch.function.name}", poller.run)
            for function in self._functions.values():
                if function.trigger_type == "timerTrigger":
                    self._spawn(f"devhost-timer-{function.name}", run_timer, function, self._stopping)
        except BaseException:
            self.stop()
            raise
        self._announce_start()
        return self

    def stop(self) -> None:
        """Stop serving, polling and timers; stop Azurite when this host started it; uninstall the context."""
        self._stopping.set()
        if self._server is not None:
            if any(t.name == "devhost-http" for t in self._threads):
                self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
                if thread.is_alive():
                    logger.warning("%s is still running a function; leaving it behind", thread.name)
        self._threads.clear()
        if self._blob_service is not None:
            self._blob_service.close()
            self._blob_service = None
        if self._azurite is not None:
            self._azurite.stop()
            self._azurite = None
        install_context(None)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _index(self) -> None:
        app = self._app
        if app is None:
            import function_app

            app = function_app.app
        self._functions = hosted_functions(app, self.settings)
        self._watches = [BlobWatch.of(f) for f in self._functions.values() if f.trigger_type == "blobTrigger"]

    def _start_storage(self) -> None:
        if self.connection_string is None:
            location = self._azurite_location or (self.settings.local_state_dir / "azurite")
            self._azurite = start_azurite(location)
            self.connection_string = self._azurite.connection_string
            logger.info("started Azurite on 127.0.0.1:%d (data in %s)", self._azurite.port, location)
        webhook = local_engine_webhook(self.settings.local_events_webhook, port=self.port, key=self.function_key)
        effective = self.settings.model_copy(
            update={
                "storage_connection_string": SecretStr(self.connection_string),
                "local_events_webhook": webhook,
                "dashboard_key": SecretStr(self.dashboard_key),
            }
        )
        context = AppContext.from_settings(effective, engine_factory=self._engine_factory)
        containers = {effective.datasets_container, effective.runs_container, *(w.container for w in self._watches)}
        for container in containers:
            context.store.ensure_container(container)
        # Few, short retries: a poll that fails is simply made again a second later.
        self._blob_service = service = BlobServiceClient.from_connection_string(
            self.connection_string,
            retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=1),
            connection_timeout=5,
        )
        receipts = BlobReceipts(self.receipts_path)
        self._pollers = [
            BlobPoller(
                watch,
                service=service,
                receipts=receipts,
                deliver=self.invoke_blob,
                stopping=self._stopping,
                interval_s=self._poll_interval_s,
                poison_threshold=self._poison_threshold,
            )
            for watch in self._watches
        ]
        self._endpoints = _Endpoints(
            http=HttpFunctions(
                self._functions.values(), prefix=host_route_prefix(), base_url=self.base_url, key=self.function_key
            ),
            webhooks=EventGridWebhooks(self._functions, self._watches, self.invoke_blob),
            admin=AdminApi(self._functions, self._watches, service=service, deliver_blob=self.invoke_blob),
        )
        install_context(context)

    def _announce_start(self) -> None:
        assert self._endpoints is not None
        http = self._endpoints.http
        self._announce(f"dev host: {self.base_url} (storage: {self._storage_label()})")
        self._announce("Functions:")
        for route in http.routes:
            methods = ",".join(sorted(route.methods)) if route.methods else "ANY"
            self._announce(f"  {route.function.name}: [{methods}] {http.url_of(route)}")
        for function in self._functions.values():
            if function.trigger_type != "httpTrigger":
                detail = function.trigger.get("path") or function.trigger.get("schedule") or ""
                self._announce(f"  {function.name}: {function.trigger_type} {detail}".rstrip())
        self._announce(f"function key: {self.function_key}")
        self._announce(f"dashboard: {self.dashboard_url()} (key: {self.dashboard_key})")

    def dashboard_url(self, *, one_time: bool = True) -> str:
        """The dashboard's address; with `one_time`, a sign-in link that works once, within 15 minutes, and holds
        no key."""
        url = f"{self.base_url}{UI_PATH}"
        if not one_time:
            return url
        ticket, _ = DashboardAuth(self.dashboard_key, trust_easy_auth=False, session_hours=1).ticket()
        return f"{url}/login?ticket={ticket}"

    def _storage_label(self) -> str:
        if self._azurite is not None:
            return f"Azurite on 127.0.0.1:{self._azurite.port}"
        return self._blob_service.url if self._blob_service is not None else "?"

    # -- delivery ----------------------------------------------------------------------------------------------

    def invoke_blob(self, function: HostedFunction, container: str, blob_name: str) -> None:
        """Deliver one blob to a blob-triggered function, bound as its parameter's type asks."""
        assert self.connection_string is not None
        deliver_blob(self.connection_string, function, container, blob_name)

    def invoke_timer(
        self, function: HostedFunction, *, past_due: bool = False, status: dict[str, str] | None = None
    ) -> Any:
        return invoke_timer(function, past_due=past_due, status=status)

    def poll_once(self, watch: BlobWatch) -> None:
        """One scan of the container: every (blob, ETag) without a receipt is delivered."""
        next(p for p in self._pollers if p.watch is watch).poll_once()

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Route one request (target = path and query, as on the request line; header names lower-cased)."""
        assert self._endpoints is not None, "the host answers requests once started"
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = f"/{self._endpoints.http.prefix}" if self._endpoints.http.prefix else ""
        if path == prefix or path.startswith(prefix + "/"):
            return self._endpoints.http.handle(method, path[len(prefix) :], parts.query, query, headers, body)
        if path in WEBHOOK_PATHS:
            if not admits(self.function_key, headers, query):
                return unauthorized()
            return self._endpoints.webhooks.handle(path.rsplit("/", 1)[-1], method, query, headers, body)
        if path.startswith("/admin/"):
            if not admits(self.function_key, headers, query):
                return unauthorized()
            if path.startswith(FUNCTIONS_PATH) and method == "POST":
                return self._endpoints.admin.run(unquote(path[len(FUNCTIONS_PATH) :]), body)
            return Reply.error(404, "not_found", f"no admin API at {path}")
        if path == "/" and method in ("GET", "HEAD"):
            return Reply(200, b"ft-autopilot dev host is running\n", [("Content-Type", "text/plain; charset=utf-8")])
        return Reply.error(404, "not_found", f"nothing is served at {path}")


def serve(
    settings: Settings,
    *,
    port: int = 7071,
    azurite_location: Path | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the dev host until `stop` is set (or Ctrl-C); `ready` is set once it serves."""
    host = DevHost(settings, port=port, azurite_location=azurite_location)
    host.start()
    try:
        if ready is not None:
            ready.set()
        stop = stop or threading.Event()
        while not stop.wait(0.5):
            pass
    finally:
        host.stop()
