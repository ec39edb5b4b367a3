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
http://127.0.0.1:<port>/score stays the same across restarts, and across a teardown and restore (the port is kept in
`.<name>.port` beside the endpoint folders). Each deployment is a deployment-server process
(serving/deployment_server.py) on a port of its own, reachable only through the router. The router re-reads
endpoint.json when it changes, so traffic updates and new deployments need no restart.

Everything is found again from these files: a new LocalEndpoints over the same folder sees the same endpoints, and
create_or_update_endpoint restarts a router whose process died (on its recorded port); create_deployment with the name
of a deployment whose process died starts it again. Processes are tracked by PID with command-line markers against
PID reuse (processes.py).

The parts: the files and the lock (endpoint_files.py), the router and deployment-server processes
(serving_processes.py), scoring (scoring.py) and the errors (endpoint_errors.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shared.domain.naming import is_resource_name
from shared.engine.base import DeploymentInfo, EndpointInfo, EndpointKeys, ModelRef
from shared.engine.local.endpoint_errors import EndpointNotFound, InvalidTraffic
from shared.engine.local.endpoint_files import EndpointFiles, check_name, now_text
from shared.engine.local.processes import free_port, log_tail
from shared.engine.local.scoring import INVOKE_TIMEOUT_S, score
from shared.engine.local.serving.router import DEFAULT_LIMITS
from shared.engine.local.serving_processes import (
    DEPLOYMENT_START_TIMEOUT_S,
    ROUTER_START_TIMEOUT_S,
    SUCCEEDED,
    ServingProcesses,
)

logger = logging.getLogger(__name__)


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
        """`serving_threads`: decoding threads per deployment process (default: the deployment server's
        default_threads, every core for a real model)."""
        self.root = Path(state_dir).resolve() / "endpoints"
        self._files = EndpointFiles(self.root)
        self._processes = ServingProcesses(
            self._files,
            python=python,
            deployment_timeout_s=deployment_timeout_s,
            router_timeout_s=router_timeout_s,
            serving_threads=serving_threads,
        )

    # -- endpoints -------------------------------------------------------------------------------

    def create_or_update_endpoint(self, name: str, tags: Mapping[str, str]) -> EndpointInfo:
        """Create the endpoint (folder, keys, port, router process) or update its tags; restart a dead router."""
        files = self._files
        folder = files.folder(name)
        with files.lock(name):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            files.ensure_keys(folder)
            config = files.read(folder) or {
                "name": name,
                "created_at": now_text(),
                "port": files.remembered_port(name) or free_port(),
                "traffic": {},
                "deployments": {},
                "limits": dict(DEFAULT_LIMITS),
            }
            config["tags"] = {str(k): str(v) for k, v in tags.items()}
            config["updated_at"] = now_text()
            files.write(folder, config)
            self._processes.ensure_router(folder, config)  # another port only when the remembered one is taken
            files.remember_port(name, config["port"])
            return files.info(folder, config)

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        folder = self._files.existing(name)
        config = self._files.read(folder) if folder else None
        return self._files.info(folder, config) if folder and config else None

    def list_endpoints(self) -> list[EndpointInfo]:
        if not self.root.is_dir():
            return []
        infos = []
        for folder in sorted(self.root.iterdir()):
            config = self._files.read(folder) if folder.is_dir() and is_resource_name(folder.name) else None
            if config:
                infos.append(self._files.info(folder, config))
        return infos

    def endpoint_alive(self, name: str) -> bool:
        """True when the endpoint's router process runs."""
        folder = self._files.existing(name)
        config = self._files.read(folder) if folder else None
        if folder is None or not config:
            return False
        return self._processes.router_alive(folder, config)

    def get_keys(self, name: str) -> EndpointKeys:
        return self._files.keys(name)

    def delete_endpoint(self, name: str) -> None:
        """Stop the router and every deployment (by PID), then remove the endpoint's folder."""
        folder = self._files.existing(name)
        if folder is None:
            return
        with self._files.lock(name):
            config = self._files.read(folder) or {}
            self._processes.stop_router(folder, config)
            deployments = [{**spec, "name": name} for name, spec in (config.get("deployments") or {}).items()]
            with ThreadPoolExecutor(max_workers=max(1, len(deployments))) as pool:
                list(pool.map(self._processes.stop_deployment, deployments))
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
        check_name(deployment_name, "deployment")
        processes = self._processes
        folder = self._files.required(endpoint_name)
        with self._files.lock(endpoint_name):
            config = self._files.read(folder)
            if config is None:
                raise EndpointNotFound(f"endpoint {endpoint_name} does not exist")
            spec = (config.get("deployments") or {}).get(deployment_name)
            if spec and processes.deployment_alive(spec, deployment_name):
                if spec.get("state") == SUCCEEDED:
                    return processes.deployment_info(endpoint_name, deployment_name, spec)
            else:
                spec = processes.start_deployment(
                    folder, config, deployment_name, model, model_dir, tokenizer_dir, spec
                )
        return processes.await_deployment(folder, endpoint_name, deployment_name, spec)

    def get_deployment(self, endpoint_name: str, deployment_name: str) -> DeploymentInfo | None:
        folder = self._files.existing(endpoint_name)
        config = self._files.read(folder) if folder else None
        spec = (config or {}).get("deployments", {}).get(deployment_name)
        return self._processes.deployment_info(endpoint_name, deployment_name, spec) if spec else None

    def deployment_logs(self, endpoint_name: str, deployment_name: str, lines: int = 100) -> str:
        """The end of the deployment server's log ("" when there is none)."""
        folder = self._files.existing(endpoint_name)
        if folder is None:
            return ""
        return log_tail(folder / "deployments" / deployment_name / "server.log", max_lines=lines)

    def list_deployments(self, endpoint_name: str) -> list[DeploymentInfo]:
        folder = self._files.existing(endpoint_name)
        config = self._files.read(folder) if folder else None
        deployments = (config or {}).get("deployments", {})
        info = self._processes.deployment_info
        return [info(endpoint_name, name, spec) for name, spec in sorted(deployments.items())]

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        """Take the deployment out of routing and traffic, stop its process, remove its folder."""
        folder = self._files.existing(endpoint_name)
        if folder is None:
            return
        with self._files.lock(endpoint_name):
            config = self._files.read(folder)
            spec = (config or {}).get("deployments", {}).pop(deployment_name, None)
            if config is None or spec is None:
                return
            weight = config.get("traffic", {}).pop(deployment_name, 0)
            if weight:
                logger.warning(
                    "deleting deployment %s of %s, which had %s%% traffic", deployment_name, endpoint_name, weight
                )
            config["updated_at"] = now_text()
            self._files.write(folder, config)  # the router stops routing to it before it stops
            self._processes.stop_deployment(spec)
            shutil.rmtree(folder / "deployments" / deployment_name, ignore_errors=True)
        logger.info("deleted deployment %s of endpoint %s", deployment_name, endpoint_name)

    def set_traffic(self, endpoint_name: str, traffic: Mapping[str, int]) -> EndpointInfo:
        """Percent per deployment: each 0..100, summing to 100 (or all 0); deployments not named get 0."""
        folder = self._files.required(endpoint_name)
        with self._files.lock(endpoint_name):
            config = self._files.read(folder)
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
            config["updated_at"] = now_text()
            self._files.write(folder, config)
            logger.info("endpoint %s traffic: %s", endpoint_name, config["traffic"])
            return self._files.info(folder, config)

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
        return score(self._files, endpoint_name, request, deployment_name, timeout_s)
