"""The AI judge (shared/adapters/judge.py): azure-ai-evaluation's real Similarity, Coherence and Fluency evaluators and
the real OpenAI client, over HTTP, against the loopback Azure OpenAI stand-in (tests/standins/azure_openai.py), whose
scoring rules the expected values follow. No Azure endpoint and no Entra ID: every judge here has an API key."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from shared.adapters.judge import AiJudge, JudgeConfig, JudgeScores
from tests.standins.azure_openai import ACCESS_DENIED, DEPLOYMENT_NOT_FOUND, AzureOpenAIStandIn

KEY = "test-key-5b1f9e2c"
WRONG_KEY = "wrong-key-c7d04a91"
API_VERSION = "2024-10-21"
QUERY = "What is the capital of France?"
TRUTH = "Paris is the capital of France."


@pytest.fixture
def standin() -> Iterator[AzureOpenAIStandIn]:
    with AzureOpenAIStandIn(deployment="judge", api_key=KEY) as server:
        yield server


def judge_on(endpoint: str, *, key: str = KEY, deployment: str = "judge", timeout_s: float = 10) -> AiJudge:
    config = JudgeConfig(endpoint, deployment, API_VERSION, api_key=key, timeout_s=timeout_s)
    return AiJudge(config)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_identical_response_scores_5_an_unrelated_one_1_and_each_evaluator_asks_once(standin: AzureOpenAIStandIn):
    # given a judge on the stand-in
    judge = judge_on(standin.endpoint)

    # when an identical, an unrelated and a repetitive response are scored
    identical = judge.score(query=QUERY, response="paris is the capital of FRANCE.", ground_truth=TRUTH)
    unrelated = judge.score(query=QUERY, response="Bananas grow in warm climates.", ground_truth=TRUTH)
    repetitive = judge.score(query=QUERY, response="Paris Paris Paris Paris", ground_truth=TRUTH)

    # then similarity follows the ground truth, coherence and fluency the response
    assert identical == JudgeScores(similarity=5.0, coherence=4.0, fluency=4.0, error=None)
    assert unrelated == JudgeScores(similarity=1.0, coherence=4.0, fluency=4.0, error=None)
    assert repetitive == JudgeScores(similarity=3.0, coherence=1.0, fluency=1.0, error=None)

    # and the stand-in got one request per evaluator per item, each as the prompty files make it
    received = standin.requests
    assert sorted(r.evaluator or "" for r in received) == sorted(["similarity", "coherence", "fluency"] * 3)
    for request in received:
        assert (request.method, request.deployment, request.api_version, request.status) == (
            "POST",
            "judge",
            API_VERSION,
            200,
        )
        assert request.headers["api-key"] == KEY
        assert "authorization" not in request.headers
        assert request.headers["user-agent"].startswith("azure-ai-evaluation/")
        assert {name: request.body[name] for name in ("model", "temperature", "max_tokens", "response_format")} == {
            "model": "judge",
            "temperature": 0.0,
            "max_tokens": 800,
            "response_format": {"type": "json_object"},
        }
    unrelated_prompts = [r for r in received if "Bananas grow in warm climates." in r.prompt]
    assert sorted(r.evaluator or "" for r in unrelated_prompts) == ["coherence", "fluency", "similarity"]
    similarity_prompts = [r.prompt for r in received if r.evaluator == "similarity"]
    assert all(TRUTH in prompt and QUERY in prompt for prompt in similarity_prompts)


def test_a_wrong_key_gives_no_scores_and_a_401_that_never_shows_the_key(
    standin: AzureOpenAIStandIn, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
):
    # given a judge with a key the resource does not know, and every log captured
    caplog.set_level(logging.DEBUG)
    config = JudgeConfig(standin.endpoint, "judge", API_VERSION, api_key=WRONG_KEY)
    judge = AiJudge(config)

    # when it scores an item
    scores = judge.score(query=QUERY, response=TRUTH, ground_truth=TRUTH)

    # then no metric has a score, the error names the 401, and the package did not retry it
    assert scores == JudgeScores(None, None, None, error=f"similarity: HTTP 401: {ACCESS_DENIED}")
    assert [r.status for r in standin.requests] == [401, 401, 401]

    # and the key is nowhere: not in the error, the config's repr, the logs, or what the package printed
    printed = capfd.readouterr()
    assert "AuthenticationError" in printed.out  # the package's own logger prints each failure to stdout
    assert "the AI judge scored 0 of 3 metrics" in caplog.text
    for text in (scores.error or "", repr(config), caplog.text, printed.out, printed.err):
        assert WRONG_KEY not in text
        assert KEY not in text


def test_another_deployment_is_reported_as_not_found(standin: AzureOpenAIStandIn):
    # given a judge naming a deployment the resource does not have
    judge = judge_on(standin.endpoint, deployment="gpt-4o-judge")

    # when it scores an item, then Azure's 404 is the error
    scores = judge.score(query=QUERY, response=TRUTH, ground_truth=TRUTH)
    assert scores == JudgeScores(
        None, None, None, error=f"similarity: HTTP 404 DeploymentNotFound: {DEPLOYMENT_NOT_FOUND}"
    )
    assert {r.deployment for r in standin.requests} == {"gpt-4o-judge"}


def test_score_many_keeps_the_order_of_six_items(standin: AzureOpenAIStandIn):
    # given six items whose scores differ
    items = [
        (QUERY, TRUTH, TRUTH),
        (QUERY, "Bananas grow in warm climates.", TRUTH),
        (QUERY, "the the the the the", TRUTH),
        ("Who wrote Hamlet?", "Shakespeare wrote it.", "William Shakespeare wrote Hamlet."),
        ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet.", "william shakespeare wrote hamlet."),
        ("Who wrote Hamlet?", "no no no no", "William Shakespeare wrote Hamlet."),
    ]
    judge = judge_on(standin.endpoint)

    # when they are scored four at a time
    scores = judge.score_many(items, workers=4)

    # then each score is its own item's, in the items' order
    assert scores == [
        JudgeScores(5.0, 4.0, 4.0),
        JudgeScores(1.0, 4.0, 4.0),
        JudgeScores(3.0, 1.0, 1.0),
        JudgeScores(3.0, 4.0, 4.0),
        JudgeScores(5.0, 4.0, 4.0),
        JudgeScores(1.0, 1.0, 1.0),
    ]
    assert len(standin.requests) == 18
    assert judge.score_many([]) == []


def test_an_empty_response_gets_no_scores_and_the_reason(standin: AzureOpenAIStandIn):
    # given a judge on the stand-in
    judge = judge_on(standin.endpoint)

    # when an empty response is scored
    scores = judge.score(query=QUERY, response="", ground_truth=TRUTH)

    # then no metric is scored: the similarity prompt is answered "skipped", as it tells the model to do, and the
    # coherence and fluency evaluators refuse an empty response before they send anything
    assert scores == JudgeScores(None, None, None, error="similarity: Not applicable: The response is empty.")
    assert [(r.evaluator, r.score) for r in standin.requests] == [("similarity", None)]


def test_score_works_where_an_event_loop_is_running_already(standin: AzureOpenAIStandIn):
    # given a judge called from inside a coroutine (an async handler, say)
    judge = judge_on(standin.endpoint)

    async def handler() -> JudgeScores:
        return judge.score(query=QUERY, response=TRUTH, ground_truth=TRUTH)

    # when it scores an item, then it scores as anywhere else
    assert asyncio.run(handler()) == JudgeScores(5.0, 4.0, 4.0)


def test_a_resource_that_is_down_gives_an_error_at_once():
    # given a judge on a port nothing listens on
    judge = judge_on(f"http://127.0.0.1:{closed_port()}", timeout_s=5)

    # when it scores an item
    started = time.monotonic()
    scores = judge.score(query=QUERY, response=TRUTH, ground_truth=TRUTH)
    elapsed = time.monotonic() - started

    # then the refused connection is the error, well inside the deadline (the package does not retry it)
    assert scores == JudgeScores(
        None, None, None, error="similarity: APIConnectionError: Connection error. (All connection attempts failed)"
    )
    assert elapsed < 3


def test_a_resource_that_does_not_answer_is_given_up_at_the_deadline():
    # given a resource that holds every answer back for 30 s, and a judge that waits 1 s
    with AzureOpenAIStandIn(deployment="judge", api_key=KEY, delay_s=30) as slow:
        judge = judge_on(slow.endpoint, timeout_s=1)

        # when it scores an item
        started = time.monotonic()
        scores = judge.score(query=QUERY, response=TRUTH, ground_truth=TRUTH)
        elapsed = time.monotonic() - started

        # then the three evaluators, asked at once, were given up together at the deadline
        assert scores == JudgeScores(None, None, None, error="similarity: no answer within 1 s (retries included)")
        assert 1 <= elapsed < 4
        assert sorted(r.evaluator or "" for r in slow.requests) == ["coherence", "fluency", "similarity"]


def test_importing_the_adapter_does_not_import_azure_ai_evaluation():
    # given a fresh interpreter, when the adapter is imported, then the evaluation package is not
    code = "import sys, shared.adapters.judge; sys.exit('azure.ai.evaluation' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
