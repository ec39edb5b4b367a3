"""A loopback stand-in for an Azure OpenAI resource's chat-completions API, as azure-ai-evaluation's AI-assisted
evaluators call it: `POST /openai/deployments/{deployment}/chat/completions?api-version=...` with an `api-key` header.

It answers as Azure does: 401 with Azure's body for a missing or wrong key, 404 `Resource not found` without an
api-version or on another path, 404 `DeploymentNotFound` for another deployment, and otherwise a `chat.completion`
object with the fields Azure adds (prompt_filter_results, content_filter_results). Which evaluator is asking is told
apart by its prompt (SimilarityEvaluator's "Equivalence" metric, CoherenceEvaluator's and FluencyEvaluator's
definitions); the answer is the JSON object their .prompty files ask for (reason, score, status), with a score
computed from the prompt's own inputs:
  similarity  5 when the response equals the ground truth (case-insensitively), 1 when they share no word, else 3;
  coherence, fluency  1 for a highly repetitive response (at least 4 words, at most half of them distinct), else 4;
  any of them  "skipped" with a null score when one of its inputs is empty, as the prompts tell the model to do.

Every request is kept in `requests` (what was sent, and what was answered). werkzeug's threaded server, 127.0.0.1 only.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

HOST = "127.0.0.1"
MODEL = "gpt-4o-2024-11-20"
_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
_WORD = re.compile(r"\w+")
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
    "please wait a moment and try again."
)
# The prompts' own words (azure-ai-evaluation 1.18.10: similarity.prompty, coherence.prompty, fluency.prompty), and
# where each puts its inputs: the last occurrence, after the few-shot examples.
_MARKERS = {
    "similarity": "Equivalence, as a metric, measures the similarity",
    "coherence": "**Coherence** refers to",
    "fluency": "**Fluency** refers to",
}
_INPUTS = {
    "similarity": re.compile(
        r".*\nquestion: (?P<query>.*)\ncorrect answer:(?P<ground_truth>.*)\npredicted answer: (?P<response>.*)"
        r"\n\nYour output must be",
        re.DOTALL,
    ),
    "coherence": re.compile(r".*\n# Data\nQUERY: (?P<query>.*)\nRESPONSE: (?P<response>.*)\n\n\n# Tasks", re.DOTALL),
    "fluency": re.compile(r".*\n# Data\nRESPONSE: (?P<response>.*)\n\n\n# Tasks", re.DOTALL),
}
_SAFE = {"filtered": False, "severity": "safe"}
_NOT_DETECTED = {"filtered": False, "detected": False}


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body; None when it was not JSON
    status: int  # what the stand-in answered
    evaluator: str | None  # similarity, coherence or fluency; None when the prompt is none of theirs
    score: int | None  # the score answered; None when skipped or not a judge prompt

    @property
    def deployment(self) -> str | None:
        match = _PATH.match(self.path)
        return match["deployment"] if match else None

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")

    @property
    def prompt(self) -> str:
        """Every message's text, joined."""
        return _prompt_text(self.body)


class AzureOpenAIStandIn:
    """`with AzureOpenAIStandIn(deployment="judge", api_key="test-key") as standin: standin.endpoint`.
    `delay_s` holds every answer back that long (a resource that is slow to answer)."""

    def __init__(self, *, deployment: str = "judge", api_key: str = "test-key", delay_s: float = 0.0) -> None:
        self.deployment, self.api_key, self.delay_s = deployment, api_key, delay_s
        self._received: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in serves only inside its with block")
        return f"http://{HOST}:{self._server.port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._received)

    def __enter__(self) -> AzureOpenAIStandIn:
        server = make_server(HOST, 0, self._app, threaded=True, request_handler=_QuietHandler)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="azure-openai-standin", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()  # a held-back answer stops waiting
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            body = None
        status, payload, evaluator, score = self._answer(request, body)
        with self._lock:
            self._received.append(
                ReceivedRequest(
                    method=request.method,
                    path=request.path,
                    query=dict(request.args),
                    headers={name.lower(): value for name, value in request.headers.items()},
                    body=body,
                    status=status,
                    evaluator=evaluator,
                    score=score,
                )
            )
        if self.delay_s:
            self._stopping.wait(self.delay_s)  # recorded already: the request was received, its answer is late
        headers = {"apim-request-id": str(uuid.uuid4()), "x-request-id": str(uuid.uuid4())}
        response = Response(json.dumps(payload), status, headers, content_type="application/json")
        return response(environ, start_response)

    def _answer(self, request: Request, body: Any) -> tuple[int, dict[str, Any], str | None, int | None]:
        if request.headers.get("api-key") != self.api_key:
            return 401, _error("401", ACCESS_DENIED), None, None
        match = _PATH.match(request.path)
        if not request.args.get("api-version") or match is None or request.method != "POST":
            return 404, _error("404", "Resource not found"), None, None
        if match["deployment"] != self.deployment:
            return 404, _error("DeploymentNotFound", DEPLOYMENT_NOT_FOUND), None, None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            error = {"message": "'messages' is a required property", "type": "invalid_request_error", "code": None}
            return 400, {"error": error}, None, None
        prompt = _prompt_text(body)
        evaluator = next((name for name, marker in _MARKERS.items() if marker in prompt), None)
        verdict = _judge(evaluator, prompt)
        content = json.dumps(verdict) if verdict else "I can only answer the evaluation prompts I know."
        score = verdict.get("score") if verdict else None
        return 200, _completion(body, content), evaluator, score


def _judge(evaluator: str | None, prompt: str) -> dict[str, Any] | None:
    """The JSON object the evaluator's prompt asks for: reason, score (1-5, or null when skipped), status."""
    match = _INPUTS[evaluator].match(prompt) if evaluator else None
    if evaluator is None or match is None:
        return None
    inputs = {name: value.strip() for name, value in match.groupdict().items()}
    if not all(inputs.values()):
        empty = ", ".join(name for name, value in inputs.items() if not value)
        return {"reason": f"The {empty} is empty.", "score": None, "status": "skipped"}
    if evaluator == "similarity":
        score = similarity_score(inputs["response"], inputs["ground_truth"])
    else:
        score = readability_score(inputs["response"])
    reason = f"Let's think step by step: the stand-in's rule gives {score}."
    return {"reason": reason, "score": score, "status": "completed"}


def similarity_score(response: str, ground_truth: str) -> int:
    if response.strip().casefold() == ground_truth.strip().casefold():
        return 5
    return 3 if set(_words(response)) & set(_words(ground_truth)) else 1


def readability_score(response: str) -> int:
    words = _words(response)
    return 1 if not words or (len(words) >= 4 and 2 * len(set(words)) <= len(words)) else 4


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _prompt_text(body: Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    """A chat.completion as Azure OpenAI sends it (the OpenAI object plus Azure's content filter results)."""
    prompt_tokens = len(_prompt_text(body).split())
    completion_tokens = len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "finish_reason": "stop",
                "logprobs": None,
                "content_filter_results": {
                    "hate": _SAFE,
                    "protected_material_code": _NOT_DETECTED,
                    "protected_material_text": _NOT_DETECTED,
                    "self_harm": _SAFE,
                    "sexual": _SAFE,
                    "violence": _SAFE,
                },
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "audio_tokens": 0,
                "reasoning_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "system_fingerprint": "fp_ee1d74bde0",
        "prompt_filter_results": [
            {
                "prompt_index": 0,
                "content_filter_results": {
                    "hate": _SAFE,
                    "jailbreak": _NOT_DETECTED,
                    "self_harm": _SAFE,
                    "sexual": _SAFE,
                    "violence": _SAFE,
                },
            }
        ],
    }


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # werkzeug logs every request line at INFO; the tests read `requests` instead
