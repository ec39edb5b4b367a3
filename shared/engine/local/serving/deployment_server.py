"""One deployment of a local endpoint: a Hugging Face chat model behind a loopback HTTP API that only the router calls.

    python -m shared.engine.local.serving.deployment_server --model-dir DIR [--tokenizer-dir DIR] --port P --name NAME
        [--threads N] [--max-new-tokens-cap N] [--max-batch N]

The port is bound first, then the model loads in the background: `GET /health` answers 503 {"error": {"code":
"loading"}} until it is ready, then 200. A model that fails to load ends the process with exit code 1 (the log says
why); a port already in use ends it with exit code 3.

    GET  /health    {"status": "ready", "name", "parameters", "device"}
    POST /generate  {"conversations": [[{"role", "content"}, ...], ...], "parameters": {...}}
                 -> {"outputs": ["...", ...], "details": [{"finish_reason", "prompt_tokens", "completion_tokens"}],
                     "usage": {"prompt_tokens", "completion_tokens", "total_tokens", "generate_s"}}

The chat template is applied with add_generation_prompt=True; generation runs under torch.inference_mode() and one
lock (one request at a time: others queue). The conversations of one request are left-padded and decoded together,
one `generate` call per chunk of at most --max-batch of them (16 by default; batching.py). Padding moves the logits
in their last float bits only (about 5e-7 on the tiny model), so a greedy answer is the one the conversation gets
alone unless two tokens tie that closely; sampled answers of one request share one random stream (a seed is set once
per request). Parameters are whitelisted (protocol.normalize_parameters); greedy when do_sample is false or the
temperature is 0; max_new_tokens is capped (--max-new-tokens-cap, 1024 by default).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from shared.engine.local.serving.batching import DEFAULT_MAX_BATCH, chunks, completion, finish_reason, left_pad
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
    generate_kwargs,
    parse_generate,
    truncate_at_stop,
)

MODULE = "shared.engine.local.serving.deployment_server"
MAX_NEW_TOKENS_CAP = 1024
DEFAULT_MAX_NEW_TOKENS = 256
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_CONVERSATIONS = 64
EXIT_LOAD_FAILED = 1

logger = logging.getLogger(MODULE)

if TYPE_CHECKING:
    from transformers import BatchEncoding


class OutputDetail(TypedDict):
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class ChatModel:
    """A causal LM and its tokenizer, loaded once; `generate` is serialized by a lock."""

    def __init__(
        self,
        model_dir: Path,
        tokenizer_dir: Path | None,
        *,
        threads: int,
        max_new_tokens_cap: int,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self._torch = torch
        self._lock = threading.Lock()
        self.max_new_tokens_cap = max_new_tokens_cap
        self.max_batch = max(1, max_batch)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
        if not getattr(self.tokenizer, "chat_template", None):
            raise RuntimeError(f"the tokenizer in {tokenizer_dir or model_dir} has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.eval()
        config = self.model.config
        limits = [getattr(config, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        self.context_length = min((n for n in limits if isinstance(n, int) and 0 < n < 10**7), default=None)
        generation = self.model.generation_config
        eos = generation.eos_token_id if generation.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        # what generate stops a row on (the generation config's eos, not the tokenizer's): the padding follows it
        stops = generation.eos_token_id
        self.stop_ids = set(stops if isinstance(stops, list) else [stops] if stops is not None else [])
        pad = generation.pad_token_id if generation.pad_token_id is not None else self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.eos_ids), None)
        self.parameters = self.model.num_parameters()

    def generate(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = generate_kwargs(
            request.parameters,
            max_new_tokens_cap=self.max_new_tokens_cap,
            default_max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        )
        if self.pad_id is not None:
            kwargs["pad_token_id"] = self.pad_id
        max_new_tokens = kwargs["max_new_tokens"]
        prompts = [self._encode(conversation, max_new_tokens) for conversation in request.conversations]
        stop = request.parameters.get("stop")
        outputs: list[str] = []
        details: list[OutputDetail] = []
        started = time.monotonic()
        with self._lock, self._torch.inference_mode():
            if "seed" in request.parameters:
                self._torch.manual_seed(request.parameters["seed"])
            for chunk in chunks(prompts, self.max_batch):
                for prompt_tokens, generated in zip(
                    (len(prompt) for prompt in chunk), self._generate_batch(chunk, kwargs), strict=True
                ):
                    # one sequence decodes to one str: the library types decode str | list[str], with no overloads
                    decoded = cast(str, self.tokenizer.decode(generated, skip_special_tokens=True))
                    text, stopped = truncate_at_stop(decoded, stop)
                    finish = finish_reason(
                        generated, eos_ids=self.eos_ids, stopped=stopped, max_new_tokens=max_new_tokens
                    )
                    outputs.append(text)
                    details.append(
                        {"finish_reason": finish, "prompt_tokens": prompt_tokens, "completion_tokens": len(generated)}
                    )
        prompt_total = sum(d["prompt_tokens"] for d in details)
        completion_total = sum(d["completion_tokens"] for d in details)
        usage = {
            "prompt_tokens": prompt_total,
            "completion_tokens": completion_total,
            "total_tokens": prompt_total + completion_total,
            "generate_s": round(time.monotonic() - started, 4),
        }
        return {"outputs": outputs, "details": details, "usage": usage}

    def _generate_batch(self, prompts: Sequence[list[int]], kwargs: dict[str, Any]) -> list[list[int]]:
        """One `generate` call for the prompts, left-padded (any id pads when the model has none: it is masked);
        each row's completion, its trailing padding cut."""
        batch = left_pad(prompts, self.pad_id if self.pad_id is not None else 0)
        input_ids = self._torch.tensor(batch.input_ids, dtype=self._torch.long)
        attention_mask = self._torch.tensor(batch.attention_mask, dtype=self._torch.long)
        # the ignore: transformers types generate's self as a Protocol that mypy finds PreTrainedModel misses
        sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)  # type: ignore[misc]
        rows = sequences[:, input_ids.shape[1] :].tolist()
        return [completion(row, self.stop_ids) for row in rows]

    def _encode(self, conversation: list[dict[str, str]], max_new_tokens: int) -> list[int]:
        try:
            # return_dict without return_tensors gives a BatchEncoding of one list of ids; the library types every
            # combination's result as one union
            encoded = cast(
                "BatchEncoding[list[int]]",
                self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=True),
            )
        except Exception as exc:  # the template may reject a conversation (e.g. roles out of order)
            raise RequestError(
                "chat_template_error", f"the model's chat template rejected the messages: {exc}"
            ) from None
        ids = list(encoded["input_ids"])
        if self.context_length is not None and len(ids) + max_new_tokens > self.context_length:
            raise RequestError(
                "prompt_too_long",
                f"the prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} it exceeds the model's "
                f"context of {self.context_length} tokens",
            )
        return ids


class Deployment:
    """What the handler serves: loading -> ready (a ChatModel) | failed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model: ChatModel | None = None
        self.error: str | None = None


class DeploymentHandler(JsonHandler):
    logger = logger
    server: DeploymentHttpServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/health":
            self.send_error_json(404, "not_found", f"no route {self.path.split('?', 1)[0]}")
            return
        deployment = self.server.deployment
        if deployment.model is None:
            self.send_error_json(503, "loading", f"deployment {deployment.name} is loading its model")
            return
        self.send_json(
            200,
            {"status": "ready", "name": deployment.name, "parameters": deployment.model.parameters, "device": "cpu"},
        )

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/generate":
            self.send_error_json(404, "not_found", f"no route {self.path.split('?', 1)[0]}")
            return
        deployment = self.server.deployment
        try:
            body = self.read_json(MAX_BODY_BYTES)
            if deployment.model is None:
                raise RequestError("deployment_not_ready", f"deployment {deployment.name} is still loading", 503)
            request = parse_generate(body, max_conversations=MAX_CONVERSATIONS)
            result = deployment.model.generate(request)
        except RequestError as exc:
            self.send_error_json(exc.status, exc.code, exc.message)
            return
        except ConnectionError:
            self.close_connection = True
            return
        except Exception:
            logger.exception("generation failed")
            self.send_error_json(500, "generation_failed", "the model failed to generate; see the deployment's log")
            return
        self._note = f"{len(result['outputs'])} outputs, {result['usage']['completion_tokens']} tokens"
        self.send_json(200, result)


class DeploymentHttpServer(JsonServer):
    def __init__(self, port: int, deployment: Deployment) -> None:
        self.deployment = deployment
        super().__init__(("127.0.0.1", port), DeploymentHandler)


def _load(server: DeploymentHttpServer, args: argparse.Namespace) -> None:
    deployment = server.deployment
    started = time.monotonic()
    try:
        deployment.model = ChatModel(
            args.model_dir,
            args.tokenizer_dir,
            threads=args.threads,
            max_new_tokens_cap=args.max_new_tokens_cap,
            max_batch=args.max_batch,
        )
    except Exception as exc:
        deployment.error = f"{type(exc).__name__}: {exc}"
        logger.exception("could not load the model from %s", args.model_dir)
        server.shutdown()
        return
    logger.info(
        "deployment %s ready: %d parameters, %d threads, loaded in %.1f s",
        deployment.name,
        deployment.model.parameters,
        args.threads,
        time.monotonic() - started,
    )


def default_threads() -> int:
    """Half the cores, at most 8: blue and green deployments share the machine, and small models decode faster on
    one thread than on two contended ones (measured with the tiny model on 2 cores)."""
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--tokenizer-dir", type=Path, default=None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--max-new-tokens-cap", type=int, default=MAX_NEW_TOKENS_CAP)
    parser.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="conversations decoded together, at most"
    )
    args = parser.parse_args(argv)
    args.threads = max(1, args.threads)

    start_server_process()
    # before torch is imported: the OpenMP/MKL pools read these once
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    deployment = Deployment(args.name)
    server = bind(lambda: DeploymentHttpServer(args.port, deployment), args.port, logger)
    if server is None:
        return EXIT_PORT_IN_USE
    logger.info("deployment %s listening on 127.0.0.1:%d, loading %s", args.name, args.port, args.model_dir)
    threading.Thread(target=_load, args=(server, args), name="load-model", daemon=True).start()
    if serve(server, logger, f"deployment {args.name}"):
        return 0
    return EXIT_LOAD_FAILED if deployment.error else 0


if __name__ == "__main__":
    sys.exit(main())
