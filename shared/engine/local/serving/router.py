"""A local endpoint: one loopback process that authenticates, routes and accounts scoring requests.

    python -m shared.engine.local.serving.router --endpoint-dir DIR

It reads DIR/endpoint.json (its port, deployments {name: {port, pid, ...}}, traffic {name: percent}, limits) and
DIR/keys.json ({primary, secondary}), both re-read whenever they change on disk, so traffic shifts and key changes need
no restart. It writes DIR/stats.json (request_count, last_request_at, per_deployment, per_status) atomically after
every authenticated scoring request, before answering it. It never logs keys, headers or bodies.

Routes (JSON in and out; errors are {"error": {"code", "message"}}):
    GET  /                      liveness, no key needed
    POST /score                 the Azure ML chat-completion contract:
                                {"input_data": {"input_string": [<messages>] | [[<messages>], ...], "parameters": {}}}
                                -> {"output": "<text>"} for one flat conversation, {"output": ["...", ...]} for several,
                                and beside it "details": [{"finish_reason": "stop" | "length", "completion_tokens"}],
                                one per answer (a list of one for a single string). An additive key: Azure ML clients
                                ignore it; it tells an answer that ran out of tokens ("length") from one that stopped
    POST /v1/chat/completions   OpenAI-compatible, non-streaming (`model` pins a deployment when one has that name)
    GET  /v1/models             the deployments, OpenAI-style
Scoring routes need `Authorization: Bearer <primary or secondary key>` (else 401). The header
`azureml-model-deployment: <name>` pins a deployment (404 when there is none); otherwise one is drawn by the traffic
weights (503 when every weight is 0). Answers carry `azureml-model-deployment` and `x-request-id` headers.
Other statuses: 400 malformed request, 411 no Content-Length, 413 body over limits.max_body_bytes (not read),
429 too many requests in flight for a deployment, 502 the deployment failed or is down, 504 it timed out.
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import json
import logging
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.engine.local.serving.jsonhttp import (
    EXIT_PORT_IN_USE,
    JsonHandler,
    JsonServer,
    bind,
    serve,
    start_server_process,
)
from shared.engine.local.serving.protocol import (
    GenerationRequest,
    RequestError,
    parse_chat_completion,
    parse_score_request,
)
from shared.engine.local.serving.router_files import Stats, WatchedJson

MODULE = "shared.engine.local.serving.router"
ENDPOINT_FILE = "endpoint.json"
KEYS_FILE = "keys.json"
STATS_FILE = "stats.json"
DEPLOYMENT_HEADER = "azureml-model-deployment"
DEFAULT_LIMITS: dict[str, int] = {
    "max_body_bytes": 1024 * 1024,
    "request_timeout_s": 300,
    "max_conversations": 16,
    "max_concurrent_requests": 16,  # per deployment, in flight (queued behind its generate lock included)
}
EXIT_BAD_CONFIG = 2

logger = logging.getLogger(MODULE)


@dataclass(frozen=True)
class Target:
    name: str
    port: int


class UpstreamError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Router:
    def __init__(self, endpoint_dir: Path) -> None:
        self.dir = endpoint_dir
        self._config = WatchedJson(endpoint_dir / ENDPOINT_FILE)
        self._keys = WatchedJson(endpoint_dir / KEYS_FILE)
        self.stats = Stats(endpoint_dir / STATS_FILE)
        self._in_flight: dict[str, int] = {}
        self._in_flight_lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        value = self._config.get()
        return value if isinstance(value, dict) else {}

    @property
    def name(self) -> str:
        return str(self.config().get("name", self.dir.name))

    def limit(self, name: str) -> int:
        limits = self.config().get("limits") or {}
        value = limits.get(name, DEFAULT_LIMITS[name])
        return value if isinstance(value, int) and value > 0 else DEFAULT_LIMITS[name]

    def deployments(self) -> dict[str, dict[str, Any]]:
        deployments = self.config().get("deployments") or {}
        return {name: spec for name, spec in deployments.items() if isinstance(spec, dict)}

    # -- auth ------------------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        keys = self._keys.get()
        if not isinstance(keys, dict):
            return False
        given = token.encode("utf-8")
        matched = False
        for slot in ("primary", "secondary"):
            key = keys.get(slot)
            if isinstance(key, str) and key:
                matched |= hmac.compare_digest(given, key.encode("utf-8"))
        return matched

    # -- routing ---------------------------------------------------------------------------------

    def choose(self, pinned: str | None, model: str | None = None) -> Target:
        deployments = self.deployments()
        if pinned is not None:
            if pinned not in deployments:
                raise RequestError(
                    "deployment_not_found", f"endpoint {self.name} has no deployment named {pinned!r}", 404
                )
            return self._target(pinned, deployments[pinned])
        if model and model in deployments:
            return self._target(model, deployments[model])
        traffic = self.config().get("traffic") or {}
        weighted = [
            (name, weight)
            for name, weight in traffic.items()
            if name in deployments and isinstance(weight, int | float) and weight > 0
        ]
        if not weighted:
            raise RequestError(
                "no_traffic",
                f"no deployment of endpoint {self.name} has traffic: set traffic, or pin one with the "
                f"{DEPLOYMENT_HEADER} header",
                503,
            )
        (name,) = random.choices([n for n, _ in weighted], weights=[w for _, w in weighted])
        return self._target(name, deployments[name])

    def _target(self, name: str, spec: dict[str, Any]) -> Target:
        port = spec.get("port")
        if not isinstance(port, int):
            raise UpstreamError(502, "deployment_unavailable", f"deployment {name} has no port recorded")
        return Target(name, port)

    def generate(self, target: Target, request: GenerationRequest) -> dict[str, Any]:
        limit = self.limit("max_concurrent_requests")
        with self._in_flight_lock:
            if self._in_flight.get(target.name, 0) >= limit:
                raise RequestError(
                    "too_many_requests", f"deployment {target.name} already has {limit} requests in flight", 429
                )
            self._in_flight[target.name] = self._in_flight.get(target.name, 0) + 1
        try:
            return self._post(target, {"conversations": request.conversations, "parameters": request.parameters})
        finally:
            with self._in_flight_lock:
                self._in_flight[target.name] -= 1

    def _post(self, target: Target, payload: dict[str, Any]) -> dict[str, Any]:
        timeout = self.limit("request_timeout_s")
        connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=timeout)
        try:
            body = json.dumps(payload).encode("utf-8")
            connection.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
        except TimeoutError:
            raise UpstreamError(
                504, "deployment_timeout", f"deployment {target.name} did not answer within {timeout} s"
            ) from None
        except OSError as exc:
            raise UpstreamError(
                502, "deployment_unavailable", f"deployment {target.name} is not answering ({exc.strerror or exc})"
            ) from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if response.status == 200 and isinstance(answer, dict) and isinstance(answer.get("outputs"), list):
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error.get("code", "deployment_error") if isinstance(error, dict) else "deployment_error"
        message = error.get("message", "") if isinstance(error, dict) else ""
        if 400 <= response.status < 500 or response.status == 503:
            raise RequestError(code, message or f"deployment {target.name} refused the request", response.status)
        raise UpstreamError(
            502, "deployment_error", f"deployment {target.name} failed (HTTP {response.status}): {message}".rstrip()
        )


class RouterHandler(JsonHandler):
    logger = logger
    server: RouterServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        router = self.server.router
        if path == "/":
            self.send_json(200, {"status": "ok", "endpoint": router.name, "pid": os.getpid()})
        elif path == "/v1/models":
            if not router.authorized(self.headers.get("Authorization")):
                self._unauthorized()
                return
            created = int(time.time())
            models = [
                {"id": name, "object": "model", "created": created, "owned_by": router.name}
                for name in router.deployments()
            ]
            self.send_json(200, {"object": "list", "data": models})
        elif path in ("/score", "/v1/chat/completions"):
            self.send_error_json(405, "method_not_allowed", f"{path} takes POST", {"Allow": "POST"})
        else:
            self.send_error_json(404, "not_found", f"no route {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/score":
            self._scoring(self._score)
        elif path == "/v1/chat/completions":
            self._scoring(self._chat_completion)
        else:
            self._other_method()

    def _other_method(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/v1/models"):
            self.send_error_json(405, "method_not_allowed", f"{path} takes GET", {"Allow": "GET"})
        elif path in ("/score", "/v1/chat/completions"):
            self.send_error_json(405, "method_not_allowed", f"{path} takes POST", {"Allow": "POST"})
        else:
            self.send_error_json(404, "not_found", f"no route {path}")

    do_PUT = do_PATCH = do_DELETE = _other_method

    def _unauthorized(self) -> None:
        self.send_error_json(
            401,
            "unauthorized",
            "a valid key is required: Authorization: Bearer <endpoint key>",
            {"WWW-Authenticate": 'Bearer realm="endpoint"'},
        )

    def _scoring(self, handle) -> None:
        router = self.server.router
        if not router.authorized(self.headers.get("Authorization")):
            self._unauthorized()
            return
        request_id = self.headers.get("x-request-id") or uuid.uuid4().hex
        headers = {"x-request-id": request_id}
        deployment: str | None = None
        try:
            body = self.read_json(router.limit("max_body_bytes"))
            status, payload, deployment = handle(router, body)
        except RequestError as exc:
            status, payload = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        except UpstreamError as exc:
            status, payload = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        except ConnectionError:
            router.stats.record(None, 499)
            self.close_connection = True
            return
        except Exception:
            logger.exception("unexpected error")
            status, payload = 500, {"error": {"code": "internal_error", "message": "the router failed; see its log"}}
        if deployment:
            headers[DEPLOYMENT_HEADER] = deployment
            self._note = f"deployment {deployment}"
        if status == 429:
            headers["Retry-After"] = "1"
        router.stats.record(deployment, status)
        self.send_json(status, payload, headers)

    def _pick(self, router: Router, model: str | None = None) -> Target:
        pinned = self.headers.get(DEPLOYMENT_HEADER)
        return router.choose(pinned.strip() if pinned is not None else None, model)

    def _score(self, router: Router, body: Any) -> tuple[int, dict[str, Any], str]:
        request = parse_score_request(body, max_conversations=router.limit("max_conversations"))
        target = self._pick(router)
        answer = router.generate(target, request)
        outputs = answer["outputs"]
        # the deployment reports one detail per output (deployment_server.OutputDetail); /score passes on two fields
        details = [
            {"finish_reason": detail["finish_reason"], "completion_tokens": detail["completion_tokens"]}
            for detail in answer["details"]
        ]
        return 200, {"output": outputs[0] if request.single else outputs, "details": details}, target.name

    def _chat_completion(self, router: Router, body: Any) -> tuple[int, dict[str, Any], str]:
        request = parse_chat_completion(body)
        target = self._pick(router, request.model)
        answer = router.generate(target, request)
        details = answer.get("details") or [{} for _ in answer["outputs"]]
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": detail.get("finish_reason", "stop"),
                "logprobs": None,
            }
            for index, (text, detail) in enumerate(zip(answer["outputs"], details, strict=False))
        ]
        prompt_tokens = int(details[0].get("prompt_tokens", 0)) if details else 0
        completion_tokens = sum(int(d.get("completion_tokens", 0)) for d in details)
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": None,
        }
        return 200, completion, target.name


class RouterServer(JsonServer):
    def __init__(self, port: int, router: Router) -> None:
        self.router = router
        super().__init__(("127.0.0.1", port), RouterHandler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoint-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    start_server_process()

    router = Router(args.endpoint_dir.resolve())
    port = router.config().get("port")
    if not isinstance(port, int):
        logger.error("%s has no port", args.endpoint_dir / ENDPOINT_FILE)
        return EXIT_BAD_CONFIG
    server = bind(lambda: RouterServer(port, router), port, logger)
    if server is None:
        return EXIT_PORT_IN_USE
    logger.info("endpoint %s listening on 127.0.0.1:%d", router.name, port)
    serve(server, logger, f"endpoint {router.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
