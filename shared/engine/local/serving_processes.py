"""The processes behind a local endpoint: its router (serving/router.py) on the endpoint's fixed loopback port, and a
deployment server (serving/deployment_server.py) per deployment on a port of its own; started, waited for until they
answer as themselves, found alive by PID and command-line markers (processes.py), and stopped."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from shared.domain.errors import EngineError
from shared.engine.base import DeploymentInfo, ModelRef
from shared.engine.local.endpoint_errors import DeploymentFailed
from shared.engine.local.endpoint_files import EndpointFiles, now_text
from shared.engine.local.processes import (
    ProcessStartError,
    free_port,
    is_alive,
    start_process,
    stop_process,
    wait_http_ok,
)
from shared.engine.local.serving.deployment_server import MODULE as DEPLOYMENT_MODULE
from shared.engine.local.serving.router import MODULE as ROUTER_MODULE

logger = logging.getLogger(__name__)

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[3]
SUCCEEDED, CREATING, FAILED = "Succeeded", "Creating", "Failed"
ROUTER_START_TIMEOUT_S = 30.0
DEPLOYMENT_START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
CONVERTED_MODELS = "serving-cache"  # under the engine's state folder: models converted for CTranslate2, by content


def child_env() -> dict[str, str]:
    """The caller's environment, with this repository importable (the children run `python -m shared...`)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    # Idle OpenMP threads spin by default, which starves everything else on a small shared machine.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class ServingProcesses:
    """`serving_threads`: decoding threads per deployment process (None: the server's default)."""

    def __init__(
        self,
        files: EndpointFiles,
        *,
        python: str,
        deployment_timeout_s: float,
        router_timeout_s: float,
        serving_threads: int | None,
    ) -> None:
        self._files = files
        self._python = python
        self._deployment_timeout_s = deployment_timeout_s
        self._router_timeout_s = router_timeout_s
        self._serving_threads = serving_threads

    # -- the router ------------------------------------------------------------------------------

    def router_alive(self, folder: Path, config: Mapping[str, Any]) -> bool:
        return is_alive(config.get("router_pid"), ROUTER_MODULE, str(folder))

    def stop_router(self, folder: Path, config: Mapping[str, Any]) -> None:
        stop_process(config.get("router_pid"), marker=str(folder), timeout_s=STOP_TIMEOUT_S)

    def ensure_router(self, folder: Path, config: dict[str, Any]) -> None:
        """Start the router unless it runs; on its recorded port, or a new one when that port is taken."""
        if self.router_alive(folder, config):
            return
        for attempt in range(2):
            log = folder / "router.log"
            pid = start_process(
                [self._python, "-m", ROUTER_MODULE, "--endpoint-dir", str(folder)], log_path=log, env=child_env()
            )
            config["router_pid"] = pid
            self._files.write(folder, config)
            try:
                body = wait_http_ok(
                    f"http://127.0.0.1:{config['port']}/", timeout_s=self._router_timeout_s, pid=pid, log_path=log
                )
                if _answer_field(body, "pid", int) == pid:
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

    # -- deployment servers ----------------------------------------------------------------------

    def deployment_alive(self, spec: Mapping[str, Any], deployment_name: str) -> bool:
        return is_alive(spec.get("pid"), DEPLOYMENT_MODULE, deployment_name, str(spec.get("port")))

    def stop_deployment(self, spec: Mapping[str, Any]) -> None:
        name = spec.get("name", "")
        if self.deployment_alive(spec, name):
            stop_process(spec.get("pid"), marker=DEPLOYMENT_MODULE, timeout_s=STOP_TIMEOUT_S)

    def start_deployment(
        self,
        folder: Path,
        config: dict[str, Any],
        deployment_name: str,
        model: ModelRef,
        model_dir: Path,
        tokenizer_dir: Path | None,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Start the server and record it (state Creating, 0% traffic for a new deployment) in endpoint.json."""
        model_dir = Path(model_dir).resolve()
        if not (model_dir / "config.json").exists():
            raise DeploymentFailed(f"deployment {deployment_name}: {model_dir} is not a Hugging Face model folder")
        port = free_port()
        command = [
            self._python, "-m", DEPLOYMENT_MODULE,
            "--model-dir", str(model_dir),
            "--port", str(port),
            "--name", deployment_name,
            "--cache-dir", str(self._files.root.parent / CONVERTED_MODELS),
        ]  # fmt: skip
        if tokenizer_dir is not None:
            command += ["--tokenizer-dir", str(Path(tokenizer_dir).resolve())]
        if self._serving_threads:
            command += ["--threads", str(self._serving_threads)]
        log = folder / "deployments" / deployment_name / "server.log"
        pid = start_process(command, log_path=log, env=child_env())
        spec = {
            "name": deployment_name,
            "port": port,
            "pid": pid,
            "model": {"name": model.name, "version": model.version, "tags": dict(model.tags)},
            "model_dir": str(model_dir),
            "tokenizer_dir": str(Path(tokenizer_dir).resolve()) if tokenizer_dir is not None else None,
            "created_at": (previous or {}).get("created_at") or now_text(),
            "state": CREATING,
        }
        config.setdefault("deployments", {})[deployment_name] = spec
        config.setdefault("traffic", {}).setdefault(deployment_name, 0)  # a new deployment starts at 0%
        config["updated_at"] = now_text()
        self._files.write(folder, config)
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

    def await_deployment(
        self, folder: Path, endpoint_name: str, deployment_name: str, spec: dict[str, Any]
    ) -> DeploymentInfo:
        """Wait until the server answers as this deployment and mark it Succeeded; one that exits or is not ready in
        time is stopped, forgotten and raised as DeploymentFailed."""
        pid, port = spec["pid"], spec["port"]
        log = folder / "deployments" / deployment_name / "server.log"
        failure: DeploymentFailed | None = None
        try:
            body = wait_http_ok(
                f"http://127.0.0.1:{port}/health", timeout_s=self._deployment_timeout_s, pid=pid, log_path=log
            )
            if _answer_field(body, "name", str) != deployment_name:
                failure = DeploymentFailed(f"deployment {deployment_name}: another process answers on port {port}")
                failure.transient = True
        except ProcessStartError as exc:
            failure = DeploymentFailed(f"deployment {deployment_name} did not start: {exc}")
            failure.transient = is_alive(pid)  # still running: too slow (transient); exited: it cannot load
        with self._files.lock(endpoint_name):
            config = self._files.read(folder)
            current = (config or {}).get("deployments", {}).get(deployment_name)
            ours = current is not None and current.get("pid") == pid
            if failure is not None:
                self.stop_deployment({**spec, "name": deployment_name})
                if config is not None and ours:
                    config["deployments"].pop(deployment_name, None)
                    config.get("traffic", {}).pop(deployment_name, None)
                    self._files.write(folder, config)
                raise failure
            if config is None or not ours:
                raise DeploymentFailed(f"deployment {deployment_name} was deleted while it started")
            if current.get("state") != SUCCEEDED:
                current["state"] = SUCCEEDED
                config["updated_at"] = now_text()
                self._files.write(folder, config)
        logger.info("endpoint %s: deployment %s ready", endpoint_name, deployment_name)
        return self.deployment_info(endpoint_name, deployment_name, current)

    def deployment_info(self, endpoint_name: str, deployment_name: str, spec: Mapping[str, Any]) -> DeploymentInfo:
        model = spec.get("model") or {}
        state = spec.get("state", FAILED) if self.deployment_alive(spec, deployment_name) else FAILED
        return DeploymentInfo(
            name=deployment_name,
            endpoint_name=endpoint_name,
            model=ModelRef(
                name=model.get("name", ""), version=str(model.get("version", "")), tags=dict(model.get("tags") or {})
            ),
            state=state,
        )


def _answer_field(body: bytes, key: str, kind: type[T]) -> T | None:
    """Field `key` of a JSON object answer when it is a `kind`; None for any other answer."""
    try:
        value = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, kind) else None
