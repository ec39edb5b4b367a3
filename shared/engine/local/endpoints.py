"""LocalEndpoints: Azure ML managed online endpoints, imitated on one machine with loopback processes.

    <state>/endpoints/<name>/          (mode 0700)
      endpoint.json    port, created_at, tags, traffic {deployment: percent}, deployments {name: {port, pid, model,
                       model_dir, tokenizer_dir, created_at, state}}, limits, router_pid
      keys.json        {"primary", "secondary"} (mode 0600, created once, never logged)
      stats.json       written by the router: request_count, last_request_at, per_deployment, per_status
      router.log       the router process's log
      deployments/<deployment>/server.log
    <state>/endpoints/.<name>.lock     serializes changes to one endpoint across threads and processes

An endpoint is a router process (serving/router.py) on a fixed loopback port: the scoring URI
http://127.0.0.1:<port>/score stays the same across restarts. Each deployment is a deployment-server process
(serving/deployment_server.py) on a port of its own, reachable only through the router. The router re-reads
endpoint.json when it changes, so traffic updates and new deployments need no restart.

Everything is found again from these files: a new LocalEndpoints over the same folder sees the same endpoints, and
create_or_update_endpoint restarts a router whose process died (on its recorded port); create_deployment with the name
of a deployment whose process died starts it again. Processes are tracked by PID with command-line markers against
PID reuse (processes.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.adapters.files import write_json_atomically
from shared.domain.errors import EngineError
from shared.domain.naming import is_resource_name
from shared.engine.base import DeploymentInfo, EndpointInfo, EndpointKeys, ModelRef
from shared.engine.local.processes import (
    ProcessStartError,
    free_port,
    is_alive,
    log_tail,
    start_process,
    stop_process,
    wait_http_ok,
)
from shared.engine.local.serving.deployment_server import MODULE as DEPLOYMENT_MODULE
from shared.engine.local.serving.router import (
    DEFAULT_LIMITS,
    DEPLOYMENT_HEADER,
    ENDPOINT_FILE,
    KEYS_FILE,
    STATS_FILE,
)
from shared.engine.local.serving.router import MODULE as ROUTER_MODULE

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
SUCCEEDED, CREATING, FAILED = "Succeeded", "Creating", "Failed"
ROUTER_START_TIMEOUT_S = 30.0
DEPLOYMENT_START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
INVOKE_TIMEOUT_S = 300.0


class InvalidName(EngineError):
    code = "invalid_name"
    http_status = 400
    transient = False


class EndpointNotFound(EngineError):
    code = "endpoint_not_found"
    http_status = 404
    transient = False


class DeploymentNotFound(EngineError):
    code = "deployment_not_found"
    http_status = 404
    transient = False


class InvalidTraffic(EngineError):
    code = "invalid_traffic"
    http_status = 400
    transient = False


class DeploymentFailed(EngineError):
    """The deployment process exited while starting (permanent) or did not become ready in time (transient)."""

    code = "deployment_failed"
    transient = False


class ScoringRejected(EngineError):
    """The endpoint refused the request (4xx): retrying the same request does not help. `code` is the endpoint's."""

    code = "scoring_rejected"
    http_status = 400
    transient = False


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _child_env() -> dict[str, str]:
    """The caller's environment, with this repository importable (the children run `python -m shared...`)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    # Idle OpenMP threads spin by default, which starves everything else on a small shared machine.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class LocalEndpoints:
    """The endpoint half of the local engine. Every method is idempotent; deleting what is absent is a no-op."""

    def __init__(
        self,
        state_dir: Path,
        *,
        python: str = sys.executable,
        deployment_timeout_s: float = DEPLOYMENT_START_TIMEOUT_S,
        router_timeout_s: float = ROUTER_START_TIMEOUT_S,
        serving_threads: int | None = None,
    ) -> None:
        """`serving_threads`: torch threads per deployment process (default: half the cores, at most 8)."""
        self.root = Path(state_dir).resolve() / "endpoints"
        self._python = python
        self._serving_threads = serving_threads
        self._deployment_timeout_s = deployment_timeout_s
        self._router_timeout_s = router_timeout_s

    # -- endpoints -------------------------------------------------------------------------------

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        """Create the endpoint (folder, keys, port, router process) or update its tags; restart a dead router."""
        folder = self._folder(name)
        with self._lock(name):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            self._ensure_keys(folder)
            config = self._read(folder) or {
                "name": name,
                "created_at": _now(),
                "port": free_port(),
                "traffic": {},
                "deployments": {},
                "limits": dict(DEFAULT_LIMITS),
            }
            config["tags"] = {str(k): str(v) for k, v in tags.items()}
            config["updated_at"] = _now()
            self._write(folder, config)
            self._ensure_router(folder, config)
            return self._info(folder, config)

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        folder = self._existing(name)
        config = self._read(folder) if folder else None
        return self._info(folder, config) if folder and config else None

    def list_endpoints(self) -> list[EndpointInfo]:
        if not self.root.is_dir():
            return []
        infos = []
        for folder in sorted(self.root.iterdir()):
            config = self._read(folder) if folder.is_dir() and is_resource_name(folder.name) else None
            if config:
                infos.append(self._info(folder, config))
        return infos

    def endpoint_alive(self, name: str) -> bool:
        """True when the endpoint's router process runs."""
        folder = self._existing(name)
        config = self._read(folder) if folder else None
        return bool(config) and is_alive(config.get("router_pid"), ROUTER_MODULE, str(folder))

    def get_keys(self, name: str) -> EndpointKeys:
        folder = self._required(name)
        try:
            keys = json.loads((folder / KEYS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EndpointNotFound(f"endpoint {name} has no keys") from exc
        return EndpointKeys(primary=keys["primary"], secondary=keys["secondary"])

    def delete_endpoint(self, name: str) -> None:
        """Stop the router and every deployment (by PID), then remove the endpoint's folder."""
        folder = self._existing(name)
        if folder is None:
            return
        with self._lock(name):
            config = self._read(folder) or {}
            stop_process(config.get("router_pid"), marker=str(folder), timeout_s=STOP_TIMEOUT_S)
            deployments = [{**spec, "name": name} for name, spec in (config.get("deployments") or {}).items()]
            with ThreadPoolExecutor(max_workers=max(1, len(deployments))) as pool:
                list(pool.map(self._stop_deployment, deployments))
            shutil.rmtree(folder, ignore_errors=True)
        logger.info("deleted endpoint %s", name)

    # -- deployments -----------------------------------------------------------------------------

    def create_deployment(
        self,
        endpoint_name: str,
        deployment_name: str,
        model: ModelRef,
        model_dir: Path,
        tokenizer_dir: Path | None = None,
    ) -> DeploymentInfo:
        """Start a deployment server for `model_dir` at 0% traffic and wait until it is ready.

        Same name with a live process: the existing deployment (waited for if it is still starting). Same name with a
        dead process: started again. A process that exits or does not become ready is stopped, forgotten, and
        reported as DeploymentFailed with the end of its log.
        """
        self._check_name(deployment_name, "deployment")
        folder = self._required(endpoint_name)
        with self._lock(endpoint_name):
            config = self._read(folder)
            if config is None:
                raise EndpointNotFound(f"endpoint {endpoint_name} does not exist")
            spec = (config.get("deployments") or {}).get(deployment_name)
            if spec and self._deployment_alive(spec, deployment_name):
                if spec.get("state") == SUCCEEDED:
                    return self._deployment_info(endpoint_name, deployment_name, spec)
            else:
                spec = self._start_deployment(folder, config, deployment_name, model, model_dir, tokenizer_dir, spec)
        return self._await_deployment(folder, endpoint_name, deployment_name, spec)

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        folder = self._existing(endpoint_name)
        config = self._read(folder) if folder else None
        spec = (config or {}).get("deployments", {}).get(deployment_name)
        return self._deployment_info(endpoint_name, deployment_name, spec) if spec else None

    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str:
        """The end of the deployment server's log ("" when there is none)."""
        folder = self._existing(endpoint_name)
        if folder is None:
            return ""
        return log_tail(folder / "deployments" / deployment_name / "server.log", max_lines=lines)

    def list_deployments(self, endpoint_name: str) -> list[DeploymentInfo]:
        folder = self._existing(endpoint_name)
        config = self._read(folder) if folder else None
        deployments = (config or {}).get("deployments", {})
        return [self._deployment_info(endpoint_name, name, spec) for name, spec in sorted(deployments.items())]

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        """Take the deployment out of routing and traffic, stop its process, remove its folder."""
        folder = self._existing(endpoint_name)
        if folder is None:
            return
        with self._lock(endpoint_name):
            config = self._read(folder)
            spec = (config or {}).get("deployments", {}).pop(deployment_name, None)
            if config is None or spec is None:
                return
            weight = config.get("traffic", {}).pop(deployment_name, 0)
            if weight:
                logger.warning(
                    "deleting deployment %s of %s, which had %s%% traffic", deployment_name, endpoint_name, weight
                )
            config["updated_at"] = _now()
            self._write(folder, config)  # the router stops routing to it before it stops
            self._stop_deployment(spec)
            shutil.rmtree(folder / "deployments" / deployment_name, ignore_errors=True)
        logger.info("deleted deployment %s of endpoint %s", deployment_name, endpoint_name)

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        """Percent per deployment: each 0..100, summing to 100 (or all 0); deployments not named get 0."""
        folder = self._required(endpoint_name)
        with self._lock(endpoint_name):
            config = self._read(folder)
            if config is None:
                raise EndpointNotFound(f"endpoint {endpoint_name} does not exist")
            deployments = config.get("deployments") or {}
            unknown = sorted(set(traffic) - set(deployments))
            if unknown:
                raise InvalidTraffic(f"endpoint {endpoint_name} has no deployment {', '.join(unknown)}")
            for name, weight in traffic.items():
                if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                    raise InvalidTraffic(f"traffic for {name} must be a whole percent from 0 to 100, got {weight!r}")
            total = sum(traffic.values())
            if total not in (0, 100):
                raise InvalidTraffic(f"traffic must sum to 100 (or be all 0), got {total}")
            config["traffic"] = {name: int(traffic.get(name, 0)) for name in deployments}
            config["updated_at"] = _now()
            self._write(folder, config)
            logger.info("endpoint %s traffic: %s", endpoint_name, config["traffic"])
            return self._info(folder, config)

    # -- scoring ---------------------------------------------------------------------------------

    def invoke(
        self,
        endpoint_name: str,
        request: dict[str, Any],
        deployment_name: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """POST `request` to the endpoint's /score with its primary key; the parsed JSON answer.

        `timeout_s` (default INVOKE_TIMEOUT_S) bounds the connection and each wait for the answer's bytes; past it,
        EngineError(code="scoring_timeout"), transient."""
        timeout_s = INVOKE_TIMEOUT_S if timeout_s is None else timeout_s
        folder = self._required(endpoint_name)
        config = self._read(folder)
        if config is None:
            raise EndpointNotFound(f"endpoint {endpoint_name} does not exist")
        keys = self.get_keys(endpoint_name)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {keys.primary}"}
        if deployment_name:
            headers[DEPLOYMENT_HEADER] = deployment_name
        http_request = urllib.request.Request(
            f"http://127.0.0.1:{config['port']}/score",
            data=json.dumps(request).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(http_request, timeout=timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise self._scoring_error(endpoint_name, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):  # connecting (wrapped in URLError) or waiting for the answer
                raise EngineError(
                    f"endpoint {endpoint_name} did not answer within {timeout_s:g} s", code="scoring_timeout"
                ) from None
            raise EngineError(
                f"endpoint {endpoint_name} is not answering: {reason}", code="endpoint_unavailable"
            ) from None
        except ValueError as exc:
            raise EngineError(f"endpoint {endpoint_name} answered with invalid JSON", code="invalid_answer") from exc

    @staticmethod
    def _scoring_error(endpoint_name: str, exc: urllib.error.HTTPError) -> EngineError:
        try:
            error = json.loads(exc.read()).get("error") or {}
        except (ValueError, AttributeError, OSError):
            error = {}
        code = str(error.get("code") or f"http_{exc.code}")
        message = f"endpoint {endpoint_name} answered {exc.code}: {error.get('message') or exc.reason}"
        if code == "deployment_not_found":
            return DeploymentNotFound(message)
        if 400 <= exc.code < 500 and exc.code != 429:
            return ScoringRejected(message, code=code)
        return EngineError(message, code=code)  # 429, 5xx: transient

    # -- internals: files ------------------------------------------------------------------------

    def _check_name(self, name: str, kind: str) -> None:
        if not isinstance(name, str) or not is_resource_name(name):
            raise InvalidName(
                f"invalid {kind} name {name!r}: 3-32 letters, digits or hyphens, starting with a letter, "
                "not ending with a hyphen"
            )

    def _folder(self, name: str) -> Path:
        self._check_name(name, "endpoint")
        return self.root / name

    def _existing(self, name: str) -> Path | None:
        if not isinstance(name, str) or not is_resource_name(name):
            return None
        folder = self.root / name
        return folder if (folder / ENDPOINT_FILE).exists() else None

    def _required(self, name: str) -> Path:
        folder = self._existing(name)
        if folder is None:
            raise EndpointNotFound(f"endpoint {name} does not exist")
        return folder

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{name}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _read(folder: Path) -> dict[str, Any] | None:
        try:
            value = json.loads((folder / ENDPOINT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @staticmethod
    def _write(folder: Path, config: dict[str, Any]) -> None:
        write_json_atomically(folder / ENDPOINT_FILE, config, durable=True)

    @staticmethod
    def _ensure_keys(folder: Path) -> None:
        path = folder / KEYS_FILE
        if path.exists():
            return
        keys = {"primary": secrets.token_urlsafe(32), "secondary": secrets.token_urlsafe(32)}
        write_json_atomically(path, keys, mode=0o600, durable=True)

    def _info(self, folder: Path, config: dict[str, Any]) -> EndpointInfo:
        stats: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            stats = json.loads((folder / STATS_FILE).read_text(encoding="utf-8"))
        return EndpointInfo(
            name=config.get("name", folder.name),
            scoring_uri=f"http://127.0.0.1:{config['port']}/score" if config.get("port") else None,
            tags=dict(config.get("tags") or {}),
            created_at=_parse_time(config.get("created_at")),
            traffic=dict(config.get("traffic") or {}),
            last_request_at=_parse_time(stats.get("last_request_at")),
            request_count=int(stats.get("request_count", 0) or 0),
        )

    # -- internals: processes --------------------------------------------------------------------

    def _ensure_router(self, folder: Path, config: dict[str, Any]) -> None:
        """Start the router unless it runs; on its recorded port, or a new one when that port is taken."""
        if is_alive(config.get("router_pid"), ROUTER_MODULE, str(folder)):
            return
        for attempt in range(2):
            log = folder / "router.log"
            pid = start_process(
                [self._python, "-m", ROUTER_MODULE, "--endpoint-dir", str(folder)], log_path=log, env=_child_env()
            )
            config["router_pid"] = pid
            self._write(folder, config)
            try:
                body = wait_http_ok(
                    f"http://127.0.0.1:{config['port']}/", timeout_s=self._router_timeout_s, pid=pid, log_path=log
                )
                if _answer_pid(body) == pid:
                    logger.info("endpoint %s: router %d on port %d", folder.name, pid, config["port"])
                    return
                problem = f"another process answers on port {config['port']}"
            except ProcessStartError as exc:
                problem = str(exc)
            stop_process(pid, marker=str(folder), timeout_s=STOP_TIMEOUT_S)
            if attempt == 0:
                logger.warning(
                    "endpoint %s: router did not start on port %d (%s); trying another port",
                    folder.name,
                    config["port"],
                    problem.splitlines()[0],
                )
                config["port"] = free_port()
        raise EngineError(f"the router of endpoint {folder.name} did not start: {problem}", code="endpoint_failed")

    def _deployment_markers(self, spec: Mapping[str, Any], deployment_name: str) -> tuple[str, ...]:
        return (DEPLOYMENT_MODULE, deployment_name, str(spec.get("port")))

    def _deployment_alive(self, spec: Mapping[str, Any], deployment_name: str) -> bool:
        return is_alive(spec.get("pid"), *self._deployment_markers(spec, deployment_name))

    def _stop_deployment(self, spec: Mapping[str, Any]) -> None:
        name = spec.get("name", "")
        if self._deployment_alive(spec, name):
            stop_process(spec.get("pid"), marker=DEPLOYMENT_MODULE, timeout_s=STOP_TIMEOUT_S)

    def _start_deployment(
        self,
        folder: Path,
        config: dict[str, Any],
        deployment_name: str,
        model: ModelRef,
        model_dir: Path,
        tokenizer_dir: Path | None,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        model_dir = Path(model_dir).resolve()
        if not (model_dir / "config.json").exists():
            raise DeploymentFailed(f"deployment {deployment_name}: {model_dir} is not a Hugging Face model folder")
        port = free_port()
        command = [
            self._python, "-m", DEPLOYMENT_MODULE,
            "--model-dir", str(model_dir),
            "--port", str(port),
            "--name", deployment_name,
        ]  # fmt: skip
        if tokenizer_dir is not None:
            command += ["--tokenizer-dir", str(Path(tokenizer_dir).resolve())]
        if self._serving_threads:
            command += ["--threads", str(self._serving_threads)]
        log = folder / "deployments" / deployment_name / "server.log"
        pid = start_process(command, log_path=log, env=_child_env())
        spec = {
            "name": deployment_name,
            "port": port,
            "pid": pid,
            "model": {"name": model.name, "version": model.version, "tags": dict(model.tags)},
            "model_dir": str(model_dir),
            "tokenizer_dir": str(Path(tokenizer_dir).resolve()) if tokenizer_dir is not None else None,
            "created_at": (previous or {}).get("created_at") or _now(),
            "state": CREATING,
        }
        config.setdefault("deployments", {})[deployment_name] = spec
        config.setdefault("traffic", {}).setdefault(deployment_name, 0)  # a new deployment starts at 0%
        config["updated_at"] = _now()
        self._write(folder, config)
        logger.info(
            "endpoint %s: starting deployment %s (pid %d, port %d) for %s:%s",
            folder.name,
            deployment_name,
            pid,
            port,
            model.name,
            model.version,
        )
        return spec

    def _await_deployment(
        self, folder: Path, endpoint_name: str, deployment_name: str, spec: dict[str, Any]
    ) -> DeploymentInfo:
        pid, port = spec["pid"], spec["port"]
        log = folder / "deployments" / deployment_name / "server.log"
        failure: DeploymentFailed | None = None
        try:
            body = wait_http_ok(
                f"http://127.0.0.1:{port}/health", timeout_s=self._deployment_timeout_s, pid=pid, log_path=log
            )
            if _answer_name(body) != deployment_name:
                failure = DeploymentFailed(f"deployment {deployment_name}: another process answers on port {port}")
                failure.transient = True
        except ProcessStartError as exc:
            failure = DeploymentFailed(f"deployment {deployment_name} did not start: {exc}")
            failure.transient = is_alive(pid)  # still running: too slow (transient); exited: it cannot load
        with self._lock(endpoint_name):
            config = self._read(folder)
            current = (config or {}).get("deployments", {}).get(deployment_name)
            ours = current is not None and current.get("pid") == pid
            if failure is not None:
                self._stop_deployment({**spec, "name": deployment_name})
                if config is not None and ours:
                    config["deployments"].pop(deployment_name, None)
                    config.get("traffic", {}).pop(deployment_name, None)
                    self._write(folder, config)
                raise failure
            if config is None or not ours:
                raise DeploymentFailed(f"deployment {deployment_name} was deleted while it started")
            if current.get("state") != SUCCEEDED:
                current["state"] = SUCCEEDED
                config["updated_at"] = _now()
                self._write(folder, config)
        logger.info("endpoint %s: deployment %s ready", endpoint_name, deployment_name)
        return self._deployment_info(endpoint_name, deployment_name, current)

    def _deployment_info(self, endpoint_name: str, deployment_name: str, spec: Mapping[str, Any]) -> DeploymentInfo:
        model = spec.get("model") or {}
        state = spec.get("state", FAILED) if self._deployment_alive(spec, deployment_name) else FAILED
        return DeploymentInfo(
            name=deployment_name,
            endpoint_name=endpoint_name,
            model=ModelRef(
                name=model.get("name", ""), version=str(model.get("version", "")), tags=dict(model.get("tags") or {})
            ),
            state=state,
        )



def _answer_pid(body: bytes) -> int | None:
    try:
        value = json.loads(body).get("pid")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _answer_name(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("name")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
