"""A local Functions host for function_app, for machines without Core Tools (`autopilot serve`, the demo, tests).

It indexes the app as the Functions host does (`app.get_functions()` once, bindings from `get_function_json()`,
`%NAME%` resolved from the app settings) and delivers every trigger the app declares:

- HTTP: `/api/<route>` (the prefix comes from host.json), route templates, methods and function keys as Azure
  enforces them (header `x-functions-key` or query `code`; ANONYMOUS routes need none).
- Event Grid: `POST /runtime/webhooks/eventgrid?functionName=<fn>`, the webhook Event Grid and the local engine
  call: validation handshake, one invocation per event, 500 when a handler raised so the sender retries.
- Blob: Azurite emits no Event Grid events, so a poller lists the trigger's container and delivers each
  (name, ETag) once, with receipts on disk and a poison threshold, like the polling blob trigger. The
  Event Grid blob webhook `/runtime/webhooks/blobs?functionName=Host.Functions.<fn>` works too.
- Timer: NCRONTAB schedules (shared.ncrontab) in UTC on a thread per function; runOnStartup honoured.
- `POST /admin/functions/<fn>` `{"input": ...}` runs a non-HTTP function by hand (Core Tools' admin API).

Everything binds 127.0.0.1. The function key is printed once at start and never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import re
import secrets
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit

import azure.functions as func
from azure.functions.blob import InputStream
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient, ExponentialRetry
from pydantic import AliasChoices, SecretStr

from shared import ncrontab
from shared.azurite import Azurite, start_azurite
from shared.context import AppContext, install_context
from shared.settings import Settings

if typing.TYPE_CHECKING:
    from shared.engine.base import Engine

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's request limit (Consumption)
POISON_BLOB_THRESHOLD = 5  # host.json extensions.blobs.poisonBlobThreshold default
PAST_DUE_GRACE = timedelta(seconds=1)
SUBSCRIPTION_VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


class DevHostError(RuntimeError):
    """The app cannot be hosted as configured (a binding names an unknown setting, a schedule is invalid...)."""


# ----------------------------------------------------------------------------------------------------------------
# Indexing


_indexed_apps: dict[int, tuple[Any, list[func.Function]]] = {}
_index_lock = threading.Lock()


def index_app(app: func.FunctionApp) -> list[func.Function]:
    """`app.get_functions()`, called once per app object in this process (a second call raises in the library).
    Everything in the process that indexes an app (the dev host, the demo, test helpers) goes through here."""
    with _index_lock:
        cached = _indexed_apps.get(id(app))
        if cached is not None and cached[0] is app:
            return cached[1]
        functions = app.get_functions()
        _indexed_apps[id(app)] = (app, functions)
        return functions


@dataclass(frozen=True)
class HostedFunction:
    """One function of the index: its trigger binding (settings resolved) and the user function."""

    name: str
    trigger: Mapping[str, Any]
    bindings: tuple[Mapping[str, Any], ...]
    call: Callable[..., Any]

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def arg_name(self) -> str:
        return str(self.trigger["name"])


@dataclass(frozen=True)
class HttpRoute:
    function: HostedFunction
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method
    auth_level: str
    rank: tuple[int, ...]

    @classmethod
    def of(cls, function: HostedFunction) -> HttpRoute:
        template = str(function.trigger.get("route") or function.name).strip("/")
        pattern, rank = _compile_route(template)
        methods = function.trigger.get("methods")
        return cls(
            function=function,
            template=template,
            pattern=pattern,
            methods=frozenset(m.upper() for m in methods) if methods else None,
            auth_level=str(function.trigger.get("authLevel") or "FUNCTION").upper(),
            rank=rank,
        )


def _compile_route(template: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """An ASP.NET-style route template as a regex over the decoded path, and its rank (more specific first)."""
    parts: list[str] = []
    rank: list[int] = []
    for segment in template.split("/") if template else []:
        match = re.fullmatch(r"\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::([^}?=]+))?(\?)?(?:=[^}]*)?\}", segment)
        if match is None:
            parts.append("/" + re.escape(segment))
            rank.append(0)
            continue
        catch_all, name, constraint, optional = match.groups()
        if catch_all:
            parts.append(f"(?:/(?P<{name}>.*))?")
            rank.append(3)
            continue
        body = r"-?\d+" if constraint in ("int", "long") else r"[^/]+"
        parts.append(f"(?:/(?P<{name}>{body}))?" if optional else f"/(?P<{name}>{body})")
        rank.append(1 if constraint else 2)
    return re.compile("".join(parts) + "/?", re.IGNORECASE), tuple(rank)


def setting_value(settings: Settings, name: str) -> str:
    """The value of app setting `name` in a Settings object: the field whose alias is that name."""
    for field_name, info in type(settings).model_fields.items():
        names = {field_name, info.alias}
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c for c in info.validation_alias.choices if isinstance(c, str))
        elif isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
        if name in names:
            value = getattr(settings, field_name)
            if value is None:
                raise DevHostError(f"app setting {name} is not set")
            return value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    raise DevHostError(f"app setting {name} is not one the app defines (see shared/settings.py)")


def _resolve(value: Any, settings: Settings) -> Any:
    if isinstance(value, str):
        return _SETTING_REFERENCE.sub(lambda m: setting_value(settings, m.group(1)), value)
    return value


def _host_route_prefix() -> str:
    try:
        host = json.loads((REPO_ROOT / "host.json").read_text())
        return str(host.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")
    except (OSError, ValueError):
        return "api"


# ----------------------------------------------------------------------------------------------------------------
# Blob receipts


class BlobReceipts:
    """Which (function, blob, ETag) were delivered, in a JSON file, so that a restart does not redeliver."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            self._entries: dict[str, dict[str, str]] = json.loads(path.read_text())
        except FileNotFoundError:
            self._entries = {}
        except ValueError:
            logger.warning("blob receipts file %s is unreadable; starting afresh", path)
            self._entries = {}

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def add(self, key: str, status: str) -> None:
        with self._lock:
            self._entries[key] = {"status": status, "at": datetime.now(UTC).isoformat()}
            self._path.parent.mkdir(parents=True, exist_ok=True)
            scratch = self._path.with_suffix(".tmp")
            scratch.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
            scratch.replace(self._path)


@dataclass(frozen=True)
class BlobWatch:
    function: HostedFunction
    container: str
    prefix: str
    pattern: re.Pattern[str]
    parameter: str  # what the function's parameter takes: BlobClient, ContainerClient, ..., bytes, str, InputStream

    @classmethod
    def of(cls, function: HostedFunction) -> BlobWatch:
        path = str(function.trigger["path"]).lstrip("/")
        container, _, blob_pattern = path.partition("/")
        if not container or "{" in container:
            raise DevHostError(f"{function.name}: blob path {path!r} must start with a fixed container name")
        prefix = blob_pattern.split("{", 1)[0]
        regex, position = "", 0
        for match in re.finditer(r"\{([^}]+)\}", blob_pattern):
            regex += re.escape(blob_pattern[position : match.start()]) + f"(?P<{match.group(1)}>.+?)"
            position = match.end()
        regex += re.escape(blob_pattern[position:])
        return cls(function, container, prefix, re.compile(regex or ".+"), _blob_parameter(function))

    def matches(self, blob_name: str) -> bool:
        return self.pattern.fullmatch(blob_name) is not None


def _blob_parameter(function: HostedFunction) -> str:
    try:
        annotation = typing.get_type_hints(function.call).get(function.arg_name)
    except Exception:  # unresolvable annotations: read the raw one
        annotation = inspect.signature(function.call).parameters[function.arg_name].annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    name = name.rsplit(".", 1)[-1]
    if name in ("BlobClient", "ContainerClient", "StorageStreamDownloader", "bytes", "str"):
        return name
    return "InputStream"


# ----------------------------------------------------------------------------------------------------------------
# The host


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, document: Any) -> _Reply:
        return cls(status, json.dumps(document).encode(), [("Content-Type", "application/json; charset=utf-8")])

    @classmethod
    def error(cls, status: int, code: str, message: str) -> _Reply:
        return cls.json(status, {"error": {"code": code, "message": message}})


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
        self.function_key = (
            settings.devhost_function_key.get_secret_value()
            if settings.devhost_function_key is not None
            else secrets.token_urlsafe(32)
        )
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
        self._routes: list[HttpRoute] = []
        self._watches: list[BlobWatch] = []
        self._route_prefix = "api"
        self._azurite: Azurite | None = None
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._blob_service: BlobServiceClient | None = None
        self._receipts: BlobReceipts | None = None
        self._blob_failures: dict[str, int] = {}
        self._started = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
            self._server.daemon_threads = True
            self.port = self._server.server_address[1]
            self._start_storage()
            self._spawn("devhost-http", self._server.serve_forever, 0.1)
            for watch in self._watches:
                self._spawn(f"devhost-blob-{watch.function.name}", self._poll_blobs, watch)
            for function in self._functions.values():
                if function.trigger_type == "timerTrigger":
                    self._spawn(f"devhost-timer-{function.name}", self._run_timer, function)
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
        self._route_prefix = _host_route_prefix()
        for function in index_app(app):
            bindings = tuple(json.loads(function.get_function_json())["bindings"])
            trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
            name = function.get_function_name()
            if trigger is None:
                logger.warning("function %s has no trigger; the dev host skips it", name)
                continue
            try:
                resolved = {key: _resolve(value, self.settings) for key, value in trigger.items()}
            except DevHostError as exc:
                raise DevHostError(f"function {name}: {exc}") from exc
            hosted = HostedFunction(name, resolved, bindings, function.get_user_function())
            self._functions[name] = hosted
            unsupported = [
                b["type"] for b in bindings if b is not trigger and not (b["type"] == "http" and b["name"] == "$return")
            ]
            if unsupported:
                logger.warning("function %s: the dev host does not bind %s", name, ", ".join(unsupported))
            if hosted.trigger_type == "httpTrigger":
                self._routes.append(HttpRoute.of(hosted))
            elif hosted.trigger_type == "blobTrigger":
                self._watches.append(BlobWatch.of(hosted))
            elif hosted.trigger_type == "timerTrigger":
                try:
                    ncrontab.next_occurrence(str(resolved["schedule"]), _utc_now())  # parses, and occurs
                except ValueError as exc:
                    raise DevHostError(f"function {name}: {exc}") from exc
            elif hosted.trigger_type != "eventGridTrigger":
                logger.warning("function %s: the dev host cannot deliver %s", name, hosted.trigger_type)
        self._routes.sort(key=lambda route: route.rank)

    def _start_storage(self) -> None:
        if self.connection_string is None:
            location = self._azurite_location or (self.settings.local_state_dir / "azurite")
            self._azurite = start_azurite(location)
            self.connection_string = self._azurite.connection_string
            logger.info("started Azurite on 127.0.0.1:%d (data in %s)", self._azurite.port, location)
        effective = self.settings.model_copy(
            update={
                "storage_connection_string": SecretStr(self.connection_string),
                "local_events_webhook": self._events_webhook(self.settings.local_events_webhook),
            }
        )
        context = AppContext.from_settings(effective, engine_factory=self._engine_factory)
        for container in {
            effective.datasets_container,
            effective.runs_container,
            *(w.container for w in self._watches),
        }:
            context.store.ensure_container(container)
        # Few, short retries: a poll that fails is simply made again a second later.
        self._blob_service = BlobServiceClient.from_connection_string(
            self.connection_string,
            retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=1),
            connection_timeout=5,
        )
        self._receipts = BlobReceipts(self.receipts_path)
        install_context(context)

    def _events_webhook(self, configured: str | None) -> str | None:
        """The local engine's event webhook, pointed at this host (port and key) when it names a local host."""
        if not configured:
            return configured
        parts = urlsplit(configured)
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.path != "/runtime/webhooks/eventgrid":
            return configured
        query = [(k, v) for k, v in parse_qs(parts.query).items() if k != "code"]
        pairs = [(k, v[0]) for k, v in query] + [("code", self.function_key)]
        return urlunsplit(("http", f"127.0.0.1:{self.port}", parts.path, urlencode(pairs), ""))

    def _announce_start(self) -> None:
        self._announce(f"dev host: {self.base_url} (storage: {self._storage_label()})")
        self._announce("Functions:")
        for route in self._routes:
            methods = ",".join(sorted(route.methods)) if route.methods else "ANY"
            self._announce(
                f"  {route.function.name}: [{methods}] {self.base_url}/{self._route_prefix}/{route.template}"
            )
        for function in self._functions.values():
            if function.trigger_type != "httpTrigger":
                detail = function.trigger.get("path") or function.trigger.get("schedule") or ""
                self._announce(f"  {function.name}: {function.trigger_type} {detail}".rstrip())
        self._announce(f"function key: {self.function_key}")

    def _storage_label(self) -> str:
        if self._azurite is not None:
            return f"Azurite on 127.0.0.1:{self._azurite.port}"
        return self._blob_service.url if self._blob_service is not None else "?"

    # -- invocation --------------------------------------------------------------------------------------------

    def _invoke(self, function: HostedFunction, value: Any) -> Any:
        """Call the user function with its trigger value; log name, trigger, outcome and duration; re-raise."""
        started = time.perf_counter()
        outcome = "Failed"
        try:
            result = function.call(**{function.arg_name: value})
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            outcome = str(result.status_code) if isinstance(result, func.HttpResponse) else "Succeeded"
            return result
        finally:
            logger.info(
                "invoked %s (%s): %s in %d ms",
                function.name,
                function.trigger_type,
                outcome,
                round((time.perf_counter() - started) * 1000),
            )

    def invoke_blob(self, function: HostedFunction, container: str, blob_name: str) -> None:
        """Deliver one blob to a blob-triggered function, bound as its parameter's type asks."""
        assert self.connection_string is not None
        client = BlobClient.from_connection_string(self.connection_string, container, blob_name)
        kind = _blob_parameter(function)
        value: Any
        if kind == "BlobClient":
            value = client
        elif kind == "ContainerClient":
            value = ContainerClient.from_connection_string(self.connection_string, container)
        elif kind == "StorageStreamDownloader":
            value = client.download_blob()
        else:
            downloader = client.download_blob()
            data = downloader.readall()
            if kind == "bytes":
                value = data
            elif kind == "str":
                value = data.decode()
            else:
                value = InputStream(
                    data=data,
                    name=f"{container}/{blob_name}",
                    uri=client.url,
                    length=len(data),
                    metadata=downloader.properties.metadata,
                )
        try:
            self._invoke(function, value)
        finally:
            client.close()

    def invoke_timer(
        self, function: HostedFunction, *, past_due: bool = False, status: dict[str, str] | None = None
    ) -> Any:
        return self._invoke(function, TimerRequest(past_due=past_due, schedule_status=status or {}))

    # -- blob polling ------------------------------------------------------------------------------------------

    def _poll_blobs(self, watch: BlobWatch) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                self.poll_once(watch)
                failing = False
            except Exception as exc:
                log = logger.debug if failing else logger.warning
                log("blob poll of %s for %s failed: %s", watch.container, watch.function.name, exc)
                failing = True
            self._stopping.wait(self._poll_interval_s)

    def poll_once(self, watch: BlobWatch) -> None:
        """One scan of the container: every (blob, ETag) without a receipt is delivered."""
        assert self._blob_service is not None and self._receipts is not None
        container = self._blob_service.get_container_client(watch.container)
        for blob in container.list_blobs(name_starts_with=watch.prefix or None):
            if self._stopping.is_set():
                return
            if not watch.matches(blob.name):
                continue
            etag = str(blob.etag).strip('"')
            key = f"{watch.function.name}|{self._blob_service.url}{watch.container}/{blob.name}|{etag}"
            if key in self._receipts:
                continue
            try:
                self.invoke_blob(watch.function, watch.container, blob.name)
            except Exception:
                tries = self._blob_failures.get(key, 0) + 1
                self._blob_failures[key] = tries
                if tries >= self._poison_threshold:
                    logger.exception(
                        "%s failed on %s/%s (ETag %s) %d times; giving up on this version (poison blob)",
                        watch.function.name,
                        watch.container,
                        blob.name,
                        etag,
                        tries,
                    )
                    self._receipts.add(key, "poison")
                    self._blob_failures.pop(key, None)
                else:
                    logger.exception(
                        "%s failed on %s/%s (try %d of %d); retrying on the next poll",
                        watch.function.name,
                        watch.container,
                        blob.name,
                        tries,
                        self._poison_threshold,
                    )
                continue
            self._blob_failures.pop(key, None)
            self._receipts.add(key, "delivered")

    # -- timers ------------------------------------------------------------------------------------------------

    def _run_timer(self, function: HostedFunction) -> None:
        schedule = ncrontab.parse(str(function.trigger["schedule"]))
        last: datetime | None = None
        if function.trigger.get("runOnStartup"):
            last = _utc_now()
            self._timer_tick(function, past_due=False, last=None, following=ncrontab.next_occurrence(schedule, last))
        scheduled = ncrontab.next_occurrence(schedule, _utc_now())
        catching_up = False
        while not self._stopping.wait(max(0.0, (scheduled - _utc_now()).total_seconds())):
            following = ncrontab.next_occurrence(schedule, scheduled)
            late = catching_up or _utc_now() - scheduled > PAST_DUE_GRACE
            self._timer_tick(function, past_due=late, last=last, following=following)
            last, now = scheduled, _utc_now()
            # A run that outlasted the next occurrence gets one catch-up run (past due), then the schedule resumes.
            catching_up = following <= now
            scheduled = now if catching_up else following

    def _timer_tick(
        self, function: HostedFunction, *, past_due: bool, last: datetime | None, following: datetime
    ) -> None:
        status = {
            "Last": last.isoformat() if last else "",
            "Next": following.isoformat(),
            "LastUpdated": _utc_now().isoformat(),
        }
        try:
            self.invoke_timer(function, past_due=past_due, status=status)
        except Exception:
            logger.exception("timer function %s failed", function.name)

    # -- HTTP --------------------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Route one request (target = path and query, as on the request line)."""
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = f"/{self._route_prefix}" if self._route_prefix else ""
        if path == prefix or path.startswith(prefix + "/"):
            return self._handle_http_function(method, path[len(prefix) :], parts.query, query, headers, body)
        if path in ("/runtime/webhooks/eventgrid", "/runtime/webhooks/blobs"):
            if not self._authorized(headers, query):
                return _unauthorized()
            return self._handle_webhook(path.rsplit("/", 1)[-1], method, query, headers, body)
        if path.startswith("/admin/"):
            if not self._authorized(headers, query):
                return _unauthorized()
            if path.startswith("/admin/functions/") and method == "POST":
                return self._handle_admin(unquote(path[len("/admin/functions/") :]), body)
            return _Reply.error(404, "not_found", f"no admin API at {path}")
        if path == "/" and method in ("GET", "HEAD"):
            return _Reply(200, b"ft-autopilot dev host is running\n", [("Content-Type", "text/plain; charset=utf-8")])
        return _Reply.error(404, "not_found", f"nothing is served at {path}")

    def _authorized(self, headers: Mapping[str, str], query: Mapping[str, list[str]]) -> bool:
        offered = headers.get("x-functions-key") or next(iter(query.get("code", [])), None)
        return offered is not None and hmac.compare_digest(offered.encode(), self.function_key.encode())

    def _handle_http_function(
        self,
        method: str,
        path: str,
        raw_query: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Reply:
        decoded = "/".join(unquote(segment) for segment in path.split("/"))
        allowed: set[str] = set()
        for route in self._routes:
            match = route.pattern.fullmatch(decoded)
            if match is None:
                continue
            if (
                route.methods is not None
                and method not in route.methods
                and not (method == "HEAD" and "GET" in route.methods)
            ):
                allowed |= route.methods
                continue
            if route.auth_level != "ANONYMOUS" and not self._authorized(headers, query):
                return _unauthorized()
            return self._call_http(route, method, path, raw_query, headers, body, match)
        if allowed:
            reply = _Reply.error(405, "method_not_allowed", f"{method} is not allowed here")
            reply.headers.append(("Allow", ", ".join(sorted(allowed))))
            return reply
        return _Reply.error(404, "not_found", f"no function serves {self._route_prefix}{path}")

    def _call_http(
        self,
        route: HttpRoute,
        method: str,
        path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        match: re.Match[str],
    ) -> _Reply:
        # The key is the host's business: the function sees neither the `code` parameter nor the key header,
        # so a handler that logs its URL cannot leak it.
        pairs = [(k, v) for k, v in _query_pairs(raw_query) if k != "code"]
        visible_query = urlencode(pairs, quote_via=quote)
        url = f"{self.base_url}/{self._route_prefix}{path}" + (f"?{visible_query}" if visible_query else "")
        params: dict[str, str] = {}
        for key, value in pairs:
            params.setdefault(key, value)
        request = func.HttpRequest(
            method=method,
            url=url,
            headers={k: v for k, v in headers.items() if k.lower() != "x-functions-key"},
            params=params,
            route_params={k: v for k, v in match.groupdict().items() if v is not None},
            body=body,
        )
        try:
            result = self._invoke(route.function, request)
        except Exception:
            logger.exception("%s raised", route.function.name)
            return _Reply(500)
        return _http_reply(result)

    def _handle_webhook(
        self, kind: str, method: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        wanted = "eventGridTrigger" if kind == "eventgrid" else "blobTrigger"
        name = next(iter(query.get("functionName", [])), "")
        if kind == "blobs":
            name = name.removeprefix("Host.Functions.")
        function = self._functions.get(name)
        if function is None or function.trigger_type != wanted:
            return _Reply.error(404, "function_not_found", f"no {wanted} function named {name!r}")
        if method == "OPTIONS":  # CloudEvents webhook validation
            origin = headers.get("webhook-request-origin", "")
            return _Reply(200, headers=[("WebHook-Allowed-Origin", origin or "*")])
        if method != "POST":
            return _Reply.error(405, "method_not_allowed", "Event Grid deliveries are POSTs")
        event_kind = headers.get("aeg-event-type", "Notification")
        if event_kind == "SubscriptionDeletion":
            return _Reply(202)
        try:
            document = json.loads(body)
        except ValueError:
            return _Reply.error(400, "invalid_json", "the body is not JSON")
        events = document if isinstance(document, list) else [document]
        if not isinstance(document, list) and not (isinstance(document, dict) and "specversion" in document):
            return _Reply.error(400, "invalid_events", "the body must be an array of events")
        if event_kind == "SubscriptionValidation" or any(
            isinstance(e, dict) and e.get("eventType") == SUBSCRIPTION_VALIDATION_EVENT for e in events
        ):
            return _validation_response(events)
        problem = next((p for p in map(_event_problem, events) if p), None)
        if problem:
            return _Reply.error(400, "invalid_events", problem)
        failures = 0
        for event in events:
            try:
                if kind == "eventgrid":
                    decoded = EventGridEventInConverter.decode(Datum(json.dumps(event), "json"), trigger_metadata=None)
                    self._invoke(function, decoded)
                else:
                    self._deliver_blob_event(function, event)
            except Exception:
                failures += 1
                logger.exception("%s failed on event %s", function.name, event.get("id"))
        if failures:
            return _Reply.error(500, "function_failed", f"{failures} of {len(events)} event(s) failed; retry")
        return _Reply(200 if kind == "eventgrid" else 202)

    def _deliver_blob_event(self, function: HostedFunction, event: Mapping[str, Any]) -> None:
        """A BlobCreated event (either schema) for a blob of the trigger's container."""
        watch = next(w for w in self._watches if w.function is function)
        subject = str(event.get("subject", ""))
        match = re.fullmatch(r"/blobServices/default/containers/([^/]+)/blobs/(.+)", subject)
        if match is None or match.group(1) != watch.container or not watch.matches(match.group(2)):
            logger.info("%s: event %s is not for %s; skipped", function.name, event.get("id"), watch.container)
            return
        self.invoke_blob(function, watch.container, match.group(2))

    def _handle_admin(self, name: str, body: bytes) -> _Reply:
        function = self._functions.get(name)
        if function is None:
            return _Reply.error(404, "function_not_found", f"no function named {name!r}")
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError:
            return _Reply.error(400, "invalid_json", 'the body is not JSON; send {"input": ...}')
        supplied = document.get("input") if isinstance(document, dict) else None
        try:
            if function.trigger_type == "timerTrigger":
                self.invoke_timer(function, past_due=False)
            elif function.trigger_type == "blobTrigger":
                watch = next(w for w in self._watches if w.function is function)
                if not isinstance(supplied, str) or not supplied:
                    return _Reply.error(400, "invalid_input", f"input is the name of a blob in {watch.container}")
                assert self._blob_service is not None
                if not self._blob_service.get_blob_client(watch.container, supplied).exists():
                    return _Reply.error(404, "blob_not_found", f"no blob {supplied!r} in {watch.container}")
                self.invoke_blob(function, watch.container, supplied)
            elif function.trigger_type == "eventGridTrigger":
                event = json.loads(supplied) if isinstance(supplied, str) else supplied
                problem = _event_problem(event) if isinstance(event, dict) else "input is one event object"
                if problem:
                    return _Reply.error(400, "invalid_input", problem)
                self._invoke(
                    function, EventGridEventInConverter.decode(Datum(json.dumps(event), "json"), trigger_metadata=None)
                )
            else:
                return _Reply.error(400, "not_invocable", f"{name} is {function.trigger_type}; call its route")
        except Exception:
            logger.exception("%s failed (admin invocation)", name)
            return _Reply.error(500, "function_failed", f"{name} raised; see the host log")
        return _Reply(202)


def _event_problem(event: Any) -> str | None:
    """Why an element of a delivery is not an event of its schema (CloudEvents when it has specversion)."""
    if not isinstance(event, dict):
        return "every event must be a JSON object"
    if "specversion" in event:
        missing = [key for key in ("id", "source", "type") if not event.get(key)]
    else:
        missing = [key for key in ("id", "eventType", "eventTime") if not event.get(key)]
        missing += [key for key in ("subject",) if not isinstance(event.get(key), str)]
    return f"event {event.get('id', '?')!s} lacks {', '.join(missing)}" if missing else None


def _validation_response(events: list[Any]) -> _Reply:
    """The Event Grid subscription handshake: echo data.validationCode as validationResponse."""
    for event in events:
        data = event.get("data") if isinstance(event, dict) else None
        if isinstance(data, dict) and isinstance(data.get("validationCode"), str) and data["validationCode"]:
            return _Reply.json(200, {"validationResponse": data["validationCode"]})
    return _Reply.error(400, "invalid_events", "a SubscriptionValidation event carries data.validationCode")


def _unauthorized() -> _Reply:
    return _Reply.error(401, "unauthorized", "a valid function key is required (x-functions-key header or ?code=)")


def _query_pairs(raw_query: str) -> Iterator[tuple[str, str]]:
    for key, values in parse_qs(raw_query, keep_blank_values=True).items():
        for value in values:
            yield key, value


def _http_reply(result: Any) -> _Reply:
    if isinstance(result, func.HttpResponse):
        headers = [(k, v) for k, v in result.headers.items() if k.lower() not in ("content-length", "content-type")]
        content_type = result.headers.get("content-type") or (
            f"{result.mimetype}; charset={result.charset}" if result.mimetype.startswith("text/") else result.mimetype
        )
        headers.append(("Content-Type", content_type))
        return _Reply(result.status_code, result.get_body() or b"", headers)
    if isinstance(result, str):
        return _Reply(200, result.encode(), [("Content-Type", "text/plain; charset=utf-8")])
    if isinstance(result, bytes):
        return _Reply(200, result, [("Content-Type", "application/octet-stream")])
    return _Reply(204)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _handler_for(host: DevHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ft-autopilot-devhost"

        def _dispatch(self) -> None:
            try:
                body = self._read_body()
            except _TooLarge:
                self.close_connection = True
                self._send(_Reply.error(413, "payload_too_large", f"the limit is {MAX_REQUEST_BYTES} bytes"))
                return
            except ValueError as exc:
                self.close_connection = True
                self._send(_Reply.error(400, "bad_request", str(exc)))
                return
            headers: dict[str, str] = {}
            for key, value in self.headers.items():
                lowered = key.lower()
                headers[lowered] = f"{headers[lowered]}, {value}" if lowered in headers else value
            try:
                reply = host.handle(self.command, self.path, headers, body)
            except Exception:
                logger.exception("the dev host failed on %s %s", self.command, urlsplit(self.path).path)
                reply = _Reply.error(500, "host_error", "the dev host failed; see its log")
            self._send(reply)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked()
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative Content-Length")
            if length > MAX_REQUEST_BYTES:
                raise _TooLarge
            return self.rfile.read(length)

        def _read_chunked(self) -> bytes:
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_BYTES:
                    raise _TooLarge
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        def _send(self, reply: _Reply) -> None:
            self.send_response(reply.status)
            for key, value in reply.headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD" and reply.body:
                self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            # The request line may carry ?code=<key>: log the path only, and only at DEBUG.
            logger.debug("%s %s", self.command, urlsplit(self.path).path if hasattr(self, "path") else "-")

    return Handler


class _TooLarge(Exception):
    pass


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
