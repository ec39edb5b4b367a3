"""A local endpoint: one loopback process that authenticates, routes and accounts scoring requests.

    python -m shared.engine.local.serving.router --endpoint-dir DIR

It reads DIR/endpoint.json (its port, deployments {name: {port, pid, ...}}, traffic {name: percent}, limits) and
DIR/keys.json ({primary, secondary}), both re-read whenever they change on disk, so traffic shifts and key changes need
no restart. It writes DIR/stats.json (request_count, last_request_at, per_deployment, per_status) atomically after
every authenticated scoring request, before answering it (a stream: before its first event). It never logs keys,
headers or bodies. Starlette under uvicorn (asgi.py); the deployments are called with httpx (upstream.py).

Routes (JSON in and out; errors are {"error": {"code", "message"}}):
    GET  /                      liveness, no key needed
    POST /score                 the Azure ML chat-completion contract:
                                {"input_data": {"input_string": [<messages>] | [[<messages>], ...], "parameters": {}}}
                                -> {"output": "<text>"} for one flat conversation, {"output": ["...", ...]} for several,
                                and beside it "details": [{"finish_reason": "stop" | "length", "completion_tokens"}],
                                one per answer (a list of one for a single string). An additive key: Azure ML clients
                                ignore it; it tells an answer that ran out of tokens ("length") from one that stopped
    POST /v1/chat/completions   OpenAI-compatible (`model` pins a deployment when one has that name); with
                                `stream: true`, server-sent `chat.completion.chunk` events ending with `data: [DONE]`
    GET  /v1/models             the deployments, OpenAI-style
Scoring routes need `Authorization: Bearer <primary or secondary key>` (else 401). The header
`azureml-model-deployment: <name>` pins a deployment (404 when there is none); otherwise one is drawn by the traffic
weights (503 when every weight is 0). Answers carry `azureml-model-deployment` and `x-request-id` headers.
Other statuses: 400 malformed request, 411 no Content-Length, 413 body over limits.max_body_bytes (not read),
429 with Retry-After when a deployment has limits.max_concurrent_requests in flight or its queue is full,
503 `deadline_exceeded` when a request is not answered within limits.request_timeout_s, 502 the deployment failed
or is down, 504 it hung past its deadline. A client that hangs up cancels its request at the deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.engine.local.serving import asgi
from shared.engine.local.serving.openai_shapes import DONE, ChunkWriter, chat_completion, error_event
from shared.engine.local.serving.protocol import (
    GenerationRequest,
    RequestError,
    parse_chat_completion,
    parse_score_request,
)
from shared.engine.local.serving.router_files import Stats, WatchedJson
from shared.engine.local.serving.upstream import Deployments, Target, UpstreamError

MODULE = "shared.engine.local.serving.router"
ENDPOINT_FILE = "endpoint.json"
KEYS_FILE = "keys.json"
STATS_FILE = "stats.json"
DEPLOYMENT_HEADER = "azureml-model-deployment"
DEFAULT_LIMITS: dict[str, int] = {
    "max_body_bytes": 1024 * 1024,
    "request_timeout_s": 300,
    "max_conversations": 16,
    "max_concurrent_requests": 16,  # per deployment, in flight (waiting in its queue included): 429 beyond
}
EXIT_BAD_CONFIG = 2

logger = logging.getLogger(MODULE)


class Router:
    def __init__(self, endpoint_dir: Path) -> None:
        self.dir = endpoint_dir
        self._config = WatchedJson(endpoint_dir / ENDPOINT_FILE)
        self._keys = WatchedJson(endpoint_dir / KEYS_FILE)
        self.stats = Stats(endpoint_dir / STATS_FILE)
        self.deployments_client = Deployments()
        self._in_flight: dict[str, int] = {}  # per deployment; only the event loop's thread touches it

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

    def deadline_s(self) -> float:
        return float(self.limit("request_timeout_s"))

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

    @contextlib.contextmanager
    def slot(self, target: Target) -> Any:
        """A place among the deployment's requests in flight; 429 when they are all taken."""
        limit = self.limit("max_concurrent_requests")
        if self._in_flight.get(target.name, 0) >= limit:
            raise RequestError(
                "too_many_requests", f"deployment {target.name} already has {limit} requests in flight", 429
            )
        self._in_flight[target.name] = self._in_flight.get(target.name, 0) + 1
        try:
            yield
        finally:
            self._in_flight[target.name] -= 1


Handler = Callable[[Router, Request, Any], Awaitable[tuple[Response, str]]]
ROUTES = {"/": ("GET",), "/v1/models": ("GET",), "/score": ("POST",), "/v1/chat/completions": ("POST",)}


def _unauthorized() -> JSONResponse:
    return asgi.error_response(
        401,
        "unauthorized",
        "a valid key is required: Authorization: Bearer <endpoint key>",
        {"WWW-Authenticate": 'Bearer realm="endpoint"'},
    )


def _pick(router: Router, request: Request, model: str | None = None) -> Target:
    pinned = request.headers.get(DEPLOYMENT_HEADER)
    return router.choose(pinned.strip() if pinned is not None else None, model)


async def _answer(router: Router, request: Request, target: Target, parsed: GenerationRequest) -> dict[str, Any]:
    """The deployment's answer; ClientDisconnect (the call canceled, so the deployment stops) if the client leaves."""
    with router.slot(target):
        call = asyncio.ensure_future(router.deployments_client.generate(target, parsed, router.deadline_s()))
        answer: dict[str, Any] = await asgi.unless_disconnected(request, call)
        return answer


async def _score(router: Router, request: Request, body: Any) -> tuple[Response, str]:
    parsed = parse_score_request(body, max_conversations=router.limit("max_conversations"))
    target = _pick(router, request)
    answer = await _answer(router, request, target, parsed)
    outputs = answer["outputs"]
    # the deployment reports one detail per output (chat_model.OutputDetail); /score passes on two fields
    details = [
        {"finish_reason": detail["finish_reason"], "completion_tokens": detail["completion_tokens"]}
        for detail in answer["details"]
    ]
    return asgi.json_response(
        200, {"output": outputs[0] if parsed.single else outputs, "details": details}
    ), target.name


async def _chat_completion(router: Router, request: Request, body: Any) -> tuple[Response, str]:
    parsed = parse_chat_completion(body)
    target = _pick(router, request, parsed.model)
    if parsed.stream:
        return await _stream_chat_completion(router, target, parsed), target.name
    answer = await _answer(router, request, target, parsed)
    details = answer.get("details") or [{} for _ in answer["outputs"]]
    return asgi.json_response(200, chat_completion(target.name, answer["outputs"], details)), target.name


async def _stream_chat_completion(router: Router, target: Target, parsed: GenerationRequest) -> Response:
    """Server-sent events, once the deployment accepted the request (its refusal is answered as JSON). A client that
    hangs up ends the response, whose cleanup closes the deployment's stream, which cancels its decoding."""
    slot = router.slot(target)
    slot.__enter__()
    opened = router.deployments_client.stream(target, parsed, router.deadline_s())
    try:
        events = await opened.__aenter__()
    except BaseException:
        slot.__exit__(None, None, None)
        raise
    closed = False

    async def cleanup() -> None:
        nonlocal closed
        if not closed:
            closed = True
            with contextlib.suppress(Exception):
                await opened.__aexit__(None, None, None)
            slot.__exit__(None, None, None)

    async def sse() -> AsyncIterator[bytes]:
        writer = ChunkWriter(target.name)
        details: list[dict[str, Any]] = []
        try:
            async for event in events:
                if "text" in event:
                    yield writer.text(int(event["index"]), str(event["text"]))
                elif "finish_reason" in event:
                    details.append(event)
                    yield writer.finish(int(event["index"]), str(event["finish_reason"]))
                elif "error" in event:
                    error = event["error"] if isinstance(event["error"], dict) else {}
                    yield error_event(str(error.get("code", "deployment_error")), str(error.get("message", "")))
                    return
            if parsed.stream_usage:
                yield writer.usage(sorted(details, key=lambda d: int(d["index"])))
            yield DONE
        except (RequestError, UpstreamError) as exc:
            yield error_event(exc.code, exc.message)

    return asgi.StreamingAnswer(
        sse(), media_type="text/event-stream", cleanup=cleanup, headers={"Cache-Control": "no-cache"}
    )


def build_app(router: Router) -> Any:
    async def liveness(request: Request) -> Response:
        return asgi.json_response(200, {"status": "ok", "endpoint": router.name, "pid": os.getpid()})

    async def models(request: Request) -> Response:
        if not router.authorized(request.headers.get("authorization")):
            return _unauthorized()
        created = int(time.time())
        listed = [
            {"id": name, "object": "model", "created": created, "owned_by": router.name}
            for name in router.deployments()
        ]
        return asgi.json_response(200, {"object": "list", "data": listed})

    def scoring(handle: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not router.authorized(request.headers.get("authorization")):
                return _unauthorized()
            headers = {"x-request-id": request.headers.get("x-request-id") or uuid.uuid4().hex}
            deployment: str | None = None
            try:
                body = await asgi.read_json(request, router.limit("max_body_bytes"))
                response, deployment = await handle(router, request, body)
            except RequestError as exc:
                response = asgi.refusal(exc)
            except UpstreamError as exc:
                response = asgi.error_response(exc.status, exc.code, exc.message)
            except ClientDisconnect:
                router.stats.record(None, 499)
                return Response(status_code=499)
            except Exception:
                logger.exception("unexpected error")
                response = asgi.error_response(500, "internal_error", "the router failed; see its log")
            if deployment:
                headers[DEPLOYMENT_HEADER] = deployment
                asgi.note(request, f"deployment {deployment}")
            response.headers.update(headers)
            router.stats.record(deployment, response.status_code)
            return response

        return endpoint

    async def other(request: Request) -> Response:
        return asgi.route_error(request.url.path, request.method, ROUTES)

    routes = [
        Route("/", liveness, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/score", scoring(_score), methods=["POST"]),
        Route("/v1/chat/completions", scoring(_chat_completion), methods=["POST"]),
        Route("/{path:path}", other, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await router.deployments_client.close()

    return asgi.RequestLog(Starlette(routes=routes, lifespan=lifespan), logger)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoint-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    asgi.start_server_process()

    router = Router(args.endpoint_dir.resolve())
    port = router.config().get("port")
    if not isinstance(port, int):
        logger.error("%s has no port", args.endpoint_dir / ENDPOINT_FILE)
        return EXIT_BAD_CONFIG
    sock = asgi.bind(port, logger)
    if sock is None:
        return asgi.EXIT_PORT_IN_USE
    logger.info("endpoint %s listening on 127.0.0.1:%d", router.name, port)
    asgi.serve(build_app(router), sock)
    logger.info("endpoint %s stopping", router.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
