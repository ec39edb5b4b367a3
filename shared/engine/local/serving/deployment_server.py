"""One deployment of a local endpoint: a Hugging Face chat model behind a loopback HTTP API that only the router calls.

    python -m shared.engine.local.serving.deployment_server --model-dir DIR [--tokenizer-dir DIR] --port P --name NAME
        [--threads N] [--backend auto|ctranslate2|transformers] [--cache-dir DIR] [--max-batch N]
        [--max-queue N] [--batch-wait-ms MS] [--max-new-tokens-cap N]

The port is bound first, then the model loads in the background: `GET /health` answers 503 {"error": {"code":
"loading"}} until it is ready, then 200. A model that fails to load ends the process with exit code 1 (the log says
why); a port already in use ends it with exit code 3.

    GET  /health    {"status": "ready", "name", "parameters", "device", "backend", "queued", "running", "max_batch",
                     "max_queue", "batches", "decoded"} (conversations waiting, decoding; decoded, in how many batches)
    POST /generate  {"conversations": [[{"role", "content"}, ...], ...], "parameters": {...}, "deadline_s": 300,
                     "stream": false}
                 -> {"outputs": ["...", ...], "details": [{"finish_reason", "prompt_tokens", "completion_tokens"}],
                     "usage": {"prompt_tokens", "completion_tokens", "total_tokens", "generate_s"}}
                    with "stream": true, NDJSON instead, one object per line: {"index", "text"} as text is generated,
                    {"index", "finish_reason", "prompt_tokens", "completion_tokens"} as each answer ends, then
                    {"usage": {...}}, or {"error": {"code", "message"}} if generation fails after the answer began.

Conversations from concurrent requests are decoded together (scheduler.py: dynamic batching, at most --max-batch per
batch, a queue of at most --max-queue conversations: 429 `queue_full` beyond it). A request past its deadline gets 503
`deadline_exceeded`; a client that hangs up frees its conversations' places. The backend (backends.py) is CTranslate2
in float32 when the model converts (`auto`, the default), else transformers' `generate`. Padding and batching move
the logits in their last float bits only, so a greedy answer is the one the conversation gets alone unless two tokens
tie that closely. Parameters are whitelisted (protocol.normalize_parameters); greedy when do_sample is false or the
temperature is 0; max_new_tokens is capped (--max-new-tokens-cap, 1024 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from shared.engine.local.serving import asgi
from shared.engine.local.serving.backends import AUTO, CTRANSLATE2, TRANSFORMERS
from shared.engine.local.serving.batching import DEFAULT_MAX_BATCH
from shared.engine.local.serving.chat_model import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_QUEUE,
    MAX_NEW_TOKENS_CAP,
    ChatModel,
    OutputDetail,
    failure,
    finished,
    usage,
)
from shared.engine.local.serving.protocol import RequestError, parse_generate
from shared.engine.local.serving.scheduler import LENGTH
from shared.engine.local.serving.scheduler import Request as Submission

MODULE = "shared.engine.local.serving.deployment_server"
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_CONVERSATIONS = 64
EXIT_LOAD_FAILED = 1
SMALL_MODEL_BYTES = 64 * 1024 * 1024

logger = logging.getLogger(MODULE)


class Deployment:
    """What the app serves: loading -> ready (a ChatModel) | failed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model: ChatModel | None = None
        self.error: str | None = None


def build_app(deployment: Deployment) -> Any:
    async def health(request: Request) -> Response:
        model = deployment.model
        if model is None:
            return asgi.error_response(503, "loading", f"deployment {deployment.name} is loading its model")
        return asgi.json_response(
            200,
            {
                "status": "ready",
                "name": deployment.name,
                "parameters": model.parameters,
                "device": "cpu",
                "backend": model.backend.name,
                "queued": model.scheduler.queued,
                "running": model.scheduler.running,
                "max_batch": model.scheduler.max_batch,
                "max_queue": model.scheduler.max_queue,
                "batches": model.scheduler.batches,
                "decoded": model.scheduler.decoded,
            },
        )

    async def generate(request: Request) -> Response:
        try:
            body = await asgi.read_json(request, MAX_BODY_BYTES)
            model = deployment.model
            if model is None:
                raise RequestError("deployment_not_ready", f"deployment {deployment.name} is still loading", 503)
            parsed = parse_generate(body, max_conversations=MAX_CONVERSATIONS)
            deadline_s = body.get("deadline_s", DEFAULT_DEADLINE_S)
            if not isinstance(deadline_s, int | float) or isinstance(deadline_s, bool) or deadline_s <= 0:
                raise RequestError("invalid_request", "'deadline_s' must be a positive number of seconds")
            submission, prompt_tokens, _ = model.submit(parsed, float(deadline_s))
        except RequestError as exc:
            return asgi.refusal(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        stop = parsed.parameters.get("stop")
        if body.get("stream") is True:

            async def cancel() -> None:
                model.scheduler.cancel(submission)  # a no-op once every conversation ended

            return asgi.StreamingAnswer(
                _stream(submission, prompt_tokens), media_type="application/x-ndjson", cleanup=cancel
            )
        try:
            await asgi.unless_disconnected(request, asyncio.ensure_future(finished(submission)))
        except ClientDisconnect:
            model.scheduler.cancel(submission)
            return Response(status_code=499)
        problem = failure(submission)
        if problem is not None:
            return asgi.refusal(problem)
        answer = model.answer(submission, prompt_tokens, stop)
        asgi.note(request, f"{len(answer['outputs'])} outputs, {answer['usage']['completion_tokens']} tokens")
        return asgi.json_response(200, answer)

    async def _stream(submission: Submission, prompt_tokens: list[int]) -> AsyncIterator[bytes]:
        details: list[OutputDetail | None] = [None] * len(submission.conversations)
        remaining = len(details)
        while remaining:
            kind, index, value = await submission.events.get()
            if kind == "text":
                yield _line({"index": index, "text": value})
                continue
            remaining -= 1
            finish = "length" if value == LENGTH else "stop"
            detail: OutputDetail = {
                "finish_reason": finish,
                "prompt_tokens": prompt_tokens[index],
                "completion_tokens": len(submission.conversations[index].tokens),
            }
            details[index] = detail
            if failure(submission) is None:
                yield _line({"index": index, **detail})
        problem = failure(submission)
        if problem is not None:
            yield _line({"error": {"code": problem.code, "message": problem.message}})
            return
        yield _line({"usage": usage([d for d in details if d is not None], submission)})

    async def other(request: Request) -> Response:
        return asgi.route_error(request.url.path, request.method, {"/health": ("GET",), "/generate": ("POST",)})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/{path:path}", other, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    return asgi.RequestLog(Starlette(routes=routes), logger)


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n"


def _load(deployment: Deployment, args: argparse.Namespace, stop: threading.Event) -> None:
    started = time.monotonic()
    try:
        deployment.model = ChatModel(
            args.model_dir,
            args.tokenizer_dir,
            threads=args.threads,
            max_new_tokens_cap=args.max_new_tokens_cap,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            batch_wait_s=args.batch_wait_ms / 1000,
            backend=args.backend,
            cache_dir=args.cache_dir,
        )
    except Exception as exc:
        deployment.error = f"{type(exc).__name__}: {exc}"
        logger.exception("could not load the model from %s", args.model_dir)
        stop.set()
        return
    logger.info(
        "deployment %s ready: %d parameters, %s backend, %d threads, loaded in %.1f s",
        deployment.name,
        deployment.model.parameters,
        deployment.model.backend.name,
        args.threads,
        time.monotonic() - started,
    )


def default_threads(model_dir: Path | None = None) -> int:
    """Every core, at most 8, for a real model: blue and green rarely decode at once (an evaluation asks one side
    after the other), and SmolLM2 on 2 cores answers 1.9x faster on 2 threads than on 1 (benchmarks/README.md).
    One thread for a model under SMALL_MODEL_BYTES (the tiny test model): its steps are too short to share."""
    if model_dir is not None and sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) < SMALL_MODEL_BYTES:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--tokenizer-dir", type=Path, default=None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=None, help="decoding threads (default: default_threads)")
    parser.add_argument("--backend", choices=(AUTO, CTRANSLATE2, TRANSFORMERS), default=AUTO)
    parser.add_argument("--cache-dir", type=Path, default=None, help="where converted models are kept")
    parser.add_argument("--max-new-tokens-cap", type=int, default=MAX_NEW_TOKENS_CAP)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="conversations decoded together")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="conversations waiting, at most")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS, help="to gather a batch")
    args = parser.parse_args(argv)
    args.threads = max(1, args.threads or default_threads(args.model_dir))

    asgi.start_server_process()
    # before torch or CTranslate2 load: the OpenMP/MKL pools read these once
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    deployment = Deployment(args.name)
    sock = asgi.bind(args.port, logger)
    if sock is None:
        return asgi.EXIT_PORT_IN_USE
    logger.info("deployment %s listening on 127.0.0.1:%d, loading %s", args.name, args.port, args.model_dir)
    load_failed = threading.Event()

    def watch(server: Any) -> None:
        def stop_when_failed() -> None:
            load_failed.wait()
            server.should_exit = True

        threading.Thread(target=stop_when_failed, name="load-watch", daemon=True).start()

    threading.Thread(target=_load, args=(deployment, args, load_failed), name="load-model", daemon=True).start()
    asgi.serve(build_app(deployment), sock, on_server=watch)
    return EXIT_LOAD_FAILED if deployment.error else 0


if __name__ == "__main__":
    sys.exit(main())
