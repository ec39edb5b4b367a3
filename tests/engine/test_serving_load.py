"""The local endpoint under load, on real router and deployment processes over the tiny model: OpenAI's own client
streaming and listing models, concurrent requests decoded together, backpressure (429 beyond the bounded queue,
503 past the deadline) and clients that hang up, after which the server is still healthy.

The tiny model never says its end token, so an answer runs to its max_new_tokens: a long one holds its place for a
second or more (about 1 ms a token alone, more in a batch).
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from shared.adapters.files import write_json_atomically
from shared.domain.tags import MANAGED_TAG
from shared.engine.base import ModelRef
from shared.engine.local.base_models import build_tiny_model
from shared.engine.local.endpoint_files import EndpointFiles
from shared.engine.local.endpoints import LocalEndpoints
from shared.engine.local.processes import free_port, start_process, stop_process, wait_http_ok
from shared.engine.local.serving.deployment_server import MODULE as DEPLOYMENT_MODULE
from shared.engine.local.serving.router import DEFAULT_LIMITS
from shared.engine.local.serving_processes import child_env
from tests.polling import eventually

MODEL = ModelRef(name="tiny-chat", version="1")
HI = [{"role": "user", "content": "Hello, how can I help you today?"}]
LONG = {"temperature": 0.0, "max_new_tokens": 1024, "min_new_tokens": 1024}


class Served:
    def __init__(self, endpoints: LocalEndpoints, name: str) -> None:
        self.endpoints, self.name = endpoints, name
        self.folder = endpoints.root / name
        info = endpoints.get_endpoint(name)
        self.url = info.scoring_uri.rsplit("/", 1)[0]
        self.key = endpoints.get_keys(name).primary

    def config(self) -> dict[str, Any]:
        return json.loads((self.folder / "endpoint.json").read_text())

    def set_limits(self, **limits: int) -> None:
        with EndpointFiles(self.endpoints.root).lock(self.name):  # as LocalEndpoints changes the file
            config = self.config()
            config["limits"] = {**DEFAULT_LIMITS, **limits}
            write_json_atomically(self.folder / "endpoint.json", config)
        time.sleep(0.05)  # the router re-reads the file on its next request (mtime)

    def deployment_health(self, name: str = "solo") -> dict[str, Any]:
        port = self.config()["deployments"][name]["port"]
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10, trust_env=False).json()

    def score(self, conversations: Any, parameters: dict[str, Any], timeout: float = 60) -> httpx.Response:
        body = {"input_data": {"input_string": conversations, "parameters": parameters}}
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.post(f"{self.url}/score", json=body, headers=headers, timeout=timeout, trust_env=False)

    def openai(self) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Served]:
    """ep-load: one deployment `solo` of the tiny model with all the traffic; limits reset after each test."""
    endpoints = LocalEndpoints(tmp_path_factory.mktemp("load-state"))
    endpoints.create_or_update_endpoint("ep-load", {MANAGED_TAG: "true"})
    try:
        endpoints.create_deployment("ep-load", "solo", MODEL, tiny_model)
        endpoints.set_traffic("ep-load", {"solo": 100})
        yield Served(endpoints, "ep-load")
    finally:
        endpoints.delete_endpoint("ep-load")


@pytest.fixture
def endpoint(served: Served) -> Iterator[Served]:
    yield served
    served.set_limits()
    assert eventually(lambda: served.deployment_health()["running"] == 0 and served.deployment_health()["queued"] == 0)


# -- the OpenAI surface ------------------------------------------------------------------------


def test_the_openai_client_streams_the_answer_it_would_get_whole(endpoint: Served):
    client = endpoint.openai()
    asked = {"model": "solo", "messages": HI, "temperature": 0, "max_tokens": 24}

    # when the same greedy question is asked whole and streamed, with the usage asked for
    whole = client.chat.completions.create(**asked)
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))

    # then the streamed pieces add up to the whole answer, the first carries the role, one the finish reason
    answered = [chunk for chunk in chunks if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in answered)
    assert text == whole.choices[0].message.content and len(answered) > 3
    assert answered[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in answered][-1] == "length" == whole.choices[0].finish_reason
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and {chunk.model for chunk in chunks} == {"solo"}
    # and the last chunk has no choices and the usage, as the whole answer does
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 24
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 0


def test_a_stream_without_include_usage_has_a_choice_in_every_chunk(endpoint: Served):
    client = endpoint.openai()

    chunks = list(client.chat.completions.create(model="solo", messages=HI, max_tokens=8, stream=True, n=2))

    assert chunks and all(chunk.choices for chunk in chunks)
    finished = Counter(chunk.choices[0].index for chunk in chunks if chunk.choices[0].finish_reason)
    assert finished == {0: 1, 1: 1}


def test_the_openai_client_lists_the_deployments_as_models(endpoint: Served):
    models = endpoint.openai().models.list()

    assert [model.id for model in models.data] == ["solo"]
    assert models.data[0].owned_by == "ep-load"


def test_a_refused_stream_is_an_error_the_openai_client_raises(endpoint: Served):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        endpoint.openai().chat.completions.create(
            model="solo", messages=[{"role": "tool", "content": "x"}], stream=True
        )

    assert refused.value.status_code == 400
    assert refused.value.body["code"] == "unrecognized_role"


# -- batching across requests ------------------------------------------------------------------


def test_concurrent_requests_are_decoded_together_and_answered_as_alone(endpoint: Served):
    # given six different greedy questions, answered one at a time first
    questions = [[{"role": "user", "content": f"Question number {n}: what is {n} + {n}?"}] for n in range(6)]
    greedy = {"temperature": 0.0, "max_new_tokens": 16}
    alone = [endpoint.score(question, greedy).json()["output"] for question in questions]
    before = endpoint.deployment_health()

    # when they come at once, from six clients
    start = threading.Barrier(6)

    def ask(question: list[dict[str, str]]) -> httpx.Response:
        start.wait()
        return endpoint.score(question, greedy)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, questions))

    # then each gets its own answer, and they were decoded in fewer batches than requests
    assert [answer.status_code for answer in answers] == [200] * 6
    assert [answer.json()["output"] for answer in answers] == alone
    after = endpoint.deployment_health()
    assert after["decoded"] - before["decoded"] == 6
    assert after["batches"] - before["batches"] < 6


# -- backpressure ------------------------------------------------------------------------------


def test_four_times_the_requests_the_queue_holds_are_each_answered_or_refused_cleanly(endpoint: Served):
    # given a deployment that takes two requests in flight
    endpoint.set_limits(max_concurrent_requests=2)
    before = json.loads((endpoint.folder / "stats.json").read_text())
    start = threading.Barrier(8)

    def ask(_: int) -> httpx.Response:
        start.wait()
        return endpoint.score(HI, {**LONG, "max_new_tokens": 256, "min_new_tokens": 256})

    # when eight long requests come at once
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))

    # then two are answered, six refused with 429 and Retry-After, none hangs or fails otherwise
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {200: 2, 429: 6}
    refused = [answer for answer in answers if answer.status_code == 429]
    assert {answer.headers["retry-after"] for answer in refused} == {"1"}
    assert {answer.json()["error"]["code"] for answer in refused} == {"too_many_requests"}
    # and the refusals are counted, and the endpoint still serves
    after = json.loads((endpoint.folder / "stats.json").read_text())
    assert after["per_status"]["429"] - before["per_status"].get("429", 0) == 6
    assert endpoint.score(HI, {"temperature": 0.0, "max_new_tokens": 4}).status_code == 200


def test_a_request_that_outlives_its_deadline_gets_503_with_a_code(endpoint: Served):
    # given a deadline of one second, and four answers of 1024 tokens (several seconds decoded together)
    endpoint.set_limits(request_timeout_s=1)
    started = time.monotonic()

    answer = endpoint.score([HI] * 4, LONG)

    # then it is refused at about its deadline, not when the answers would have been done
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 4
    assert eventually(lambda: endpoint.deployment_health()["running"] == 0, 3)


def test_a_client_that_hangs_up_mid_stream_frees_its_place(endpoint: Served):
    # given a deployment that takes one request in flight, and a client streaming a long answer
    endpoint.set_limits(max_concurrent_requests=1)
    body = {"messages": HI, "max_tokens": 1024, "temperature": 0, "stream": True}
    headers = {"Authorization": f"Bearer {endpoint.key}"}
    with (
        httpx.Client(trust_env=False, timeout=30) as client,
        client.stream("POST", f"{endpoint.url}/v1/chat/completions", json=body, headers=headers) as stream,
    ):
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
        assert endpoint.deployment_health()["running"] == 1
        # when it hangs up after its first chunk
    hung_up = time.monotonic()

    # then its decoding stops at once, long before its 1024 tokens, and the next client is served, not refused
    assert eventually(lambda: endpoint.deployment_health()["running"] == 0, 3)
    assert time.monotonic() - hung_up < 3
    assert endpoint.score(HI, {"temperature": 0.0, "max_new_tokens": 4}).status_code == 200


def test_a_client_that_hangs_up_before_its_answer_frees_its_place(endpoint: Served):
    # given a client waiting for four long answers (several seconds together)
    body = json.dumps({"input_data": {"input_string": [HI] * 4, "parameters": LONG}}).encode()
    port = int(endpoint.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {endpoint.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert eventually(lambda: endpoint.deployment_health()["running"] == 4, 5)
        # when it hangs up
    hung_up = time.monotonic()

    # then the deployment stops decoding for it
    assert eventually(lambda: endpoint.deployment_health()["running"] == 0, 3)
    assert time.monotonic() - hung_up < 3


# -- the deployment's own queue ----------------------------------------------------------------


@pytest.fixture
def small_queue_deployment(tiny_model: Path, tmp_path: Path) -> Iterator[int]:
    """A deployment server on its own: one conversation decoded at a time, two more may wait."""
    port = free_port()
    command = [
        *(sys.executable, "-m", DEPLOYMENT_MODULE, "--model-dir", str(tiny_model), "--port", str(port)),
        *("--name", "small-queue", "--cache-dir", str(tmp_path / "cache"), "--max-batch", "1", "--max-queue", "2"),
        *("--batch-wait-ms", "0"),
    ]
    pid = start_process(command, log_path=tmp_path / "server.log", env=child_env())
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", timeout_s=120, pid=pid, log_path=tmp_path / "server.log")
        yield port
    finally:
        stop_process(pid, marker=DEPLOYMENT_MODULE)


def _generate(port: int, conversations: list[Any], parameters: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = json.dumps({"conversations": conversations, "parameters": parameters})
        connection.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, {**json.loads(response.read()), "retry-after": response.getheader("Retry-After")}
    finally:
        connection.close()


def test_beyond_its_queue_a_deployment_refuses_with_429_and_keeps_serving(small_queue_deployment: int):
    port = small_queue_deployment
    medium = {"temperature": 0.0, "max_new_tokens": 512, "min_new_tokens": 512}
    # given one long conversation decoding
    with ThreadPoolExecutor(9) as pool:
        running = pool.submit(_generate, port, [HI], LONG)
        assert eventually(lambda: _health(port)["running"] == 1, 5)

        # when eight more come at once: four times the queue's two places
        start = threading.Barrier(8)

        def ask(_: int) -> tuple[int, dict[str, Any]]:
            start.wait()
            return _generate(port, [HI], medium)

        answers = list(pool.map(ask, range(8)))

    # then two wait their turn and are answered, six are refused with queue_full and Retry-After
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: 2, 429: 6}
    refused = [answer for status, answer in answers if status == 429]
    assert {answer["error"]["code"] for answer in refused} == {"queue_full"}
    assert {answer["retry-after"] for answer in refused} == {"1"}
    assert running.result()[0] == 200
    # and the deployment is healthy and idle afterwards
    health = _health(port)
    assert (health["status"], health["running"], health["queued"]) == ("ready", 0, 0)


def _health(port: int) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10, trust_env=False).json()


def test_a_stream_hung_up_on_while_it_waits_in_the_queue_leaves_the_queue(endpoint: Served):
    # given two long answers decoding, and a stream with other options waiting behind them (another batch)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(endpoint.score, [HI] * 2, LONG)
        assert eventually(lambda: endpoint.deployment_health()["running"] == 2, 5)
        body = {"messages": HI, "max_tokens": 8, "temperature": 0, "stream": True}
        headers = {"Authorization": f"Bearer {endpoint.key}"}
        with (
            httpx.Client(trust_env=False, timeout=30) as client,
            client.stream("POST", f"{endpoint.url}/v1/chat/completions", json=body, headers=headers) as stream,
        ):
            assert stream.status_code == 200
            assert eventually(lambda: endpoint.deployment_health()["queued"] == 1, 5)
            # when its client hangs up before any text
        # then it leaves the queue while the others still decode, and they are answered
        assert eventually(lambda: endpoint.deployment_health()["queued"] == 0, 2)
        assert endpoint.deployment_health()["running"] == 2
        assert busy.result().status_code == 200
