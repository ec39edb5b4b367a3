"""The local endpoint server: real router and deployment processes over the tiny model, spoken to over HTTP.

One endpoint with two deployments of the same tiny model (blue 100%, green 0%) is shared by most tests; a second
endpoint is crashed, restarted and deleted. Every process is stopped by the fixtures' finalizers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from shared.domain.errors import EngineError
from shared.domain.tags import MANAGED_TAG
from shared.engine.base import ModelRef
from shared.engine.local.base_models import build_tiny_model
from shared.engine.local.endpoint_errors import (
    DeploymentFailed,
    DeploymentNotFound,
    EndpointNotFound,
    InvalidName,
    InvalidTraffic,
    ScoringRejected,
)
from shared.engine.local.endpoints import LocalEndpoints
from shared.engine.local.serving.protocol import generate_kwargs, normalize_parameters
from tests.polling import eventually

MODEL = ModelRef(name="tiny-chat", version="1")
HI = [{"role": "user", "content": "Hello, how can I help you today?"}]
GREEDY = {"temperature": 0.0, "max_new_tokens": 8}


@dataclass
class Endpoint:
    endpoints: LocalEndpoints
    name: str
    port: int
    folder: Path

    @property
    def keys(self):
        return self.endpoints.get_keys(self.name)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = "primary",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One HTTP request; `key` is "primary", "secondary", None (no Authorization) or a literal key."""
        all_headers = dict(headers or {})
        if key is not None:
            token = {"primary": self.keys.primary, "secondary": self.keys.secondary}.get(key, key)
            all_headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=data, headers=all_headers)
            response = connection.getresponse()
            payload = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(payload or b"null")
        finally:
            connection.close()

    def raw_score(self, rest: bytes, *, read: bool = True) -> bytes:
        """A POST /score written on a socket by hand: the request line, Host and Authorization, then `rest` (the
        other headers, the blank line and what of a body is sent); the first bytes of the reply, if `read`."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw_socket:
            raw_socket.sendall(
                b"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + self.keys.primary.encode()
                + b"\r\n"
                + rest
            )
            return raw_socket.recv(4096) if read else b""

    def score(self, conversations: Any, parameters: dict | None = None, **kwargs) -> tuple[int, dict, Any]:
        body = {"input_data": {"input_string": conversations, "parameters": parameters or GREEDY}, "params": {}}
        return self.request("POST", "/score", body, **kwargs)

    def stats(self) -> dict[str, Any]:
        return json.loads((self.folder / "stats.json").read_text())

    def config(self) -> dict[str, Any]:
        return json.loads((self.folder / "endpoint.json").read_text())


def _port(info) -> int:
    return int(info.scoring_uri.split(":")[-1].split("/")[0])


def _endpoint(endpoints: LocalEndpoints, name: str) -> Endpoint:
    info = endpoints.create_or_update_endpoint(name, {MANAGED_TAG: "true"})
    return Endpoint(endpoints, name, _port(info), endpoints.root / name)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-state")


@pytest.fixture(scope="module")
def endpoints(state_dir: Path) -> LocalEndpoints:
    return LocalEndpoints(state_dir)


@pytest.fixture(scope="module")
def served(endpoints: LocalEndpoints, tiny_model: Path) -> Iterator[Endpoint]:
    """ep-serving: blue (100%) and green (0%), both the tiny model, started concurrently."""
    endpoint = _endpoint(endpoints, "ep-serving")
    try:
        errors: list[BaseException] = []

        def deploy(name: str) -> None:
            try:
                endpoints.create_deployment(endpoint.name, name, MODEL, tiny_model)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=deploy, args=(name,)) for name in ("blue", "green")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        endpoints.set_traffic(endpoint.name, {"blue": 100, "green": 0})
        yield endpoint
    finally:
        endpoints.delete_endpoint(endpoint.name)


# -- the scoring contract ----------------------------------------------------------------------


def test_one_conversation_gets_one_answer(served: Endpoint):
    # given the seed's request shape with one flat conversation and sampling parameters
    parameters = {"temperature": 0.6, "top_p": 0.9, "do_sample": True, "max_new_tokens": 16}

    # when it is scored
    status, headers, body = served.score(HI, parameters)

    # then the answer is one string, from the deployment with all the traffic, and its details a list of one
    assert status == 200
    assert set(body) == {"output", "details"} and isinstance(body["output"], str)
    assert len(body["details"]) == 1
    assert headers["azureml-model-deployment"] == "blue"
    assert headers["x-request-id"]


def test_several_conversations_get_a_list_of_answers_in_order(served: Endpoint):
    # given three conversations, one with a system message and an earlier exchange
    conversations = [
        HI,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Thank you!"},
        ],
    ]

    # when they are scored greedily
    status, _, body = served.score(conversations)
    again = served.score(conversations)[2]

    # then there are as many answers, in order (greedy decoding repeats itself)
    assert status == 200
    assert isinstance(body["output"], list) and len(body["output"]) == 3
    assert all(isinstance(text, str) for text in body["output"])
    assert again == body


@pytest.mark.parametrize("shape", ["single", "list"])
def test_score_details_say_an_answer_ran_out_of_tokens(served: Endpoint, shape: str):
    # given a greedy request with room for two tokens only (the tiny model never ends that soon)
    conversations = HI if shape == "single" else [HI, [{"role": "user", "content": "What is the capital of France?"}]]

    # when it is scored
    status, _, body = served.score(conversations, {"temperature": 0.0, "max_new_tokens": 2})

    # then beside the answer(s) there is one detail per answer: it ran out of tokens after two
    assert status == 200
    answers = [body["output"]] if shape == "single" else body["output"]
    assert isinstance(body["output"], str if shape == "single" else list)
    assert body["details"] == [{"finish_reason": "length", "completion_tokens": 2}] * len(answers)
    assert len(answers) == (1 if shape == "single" else 2)


def test_the_openai_client_gets_a_chat_completion(served: Endpoint):
    # given the real OpenAI client pointed at the endpoint
    client = OpenAI(base_url=f"http://127.0.0.1:{served.port}/v1", api_key=served.keys.primary, max_retries=0)

    # when it asks for a greedy completion
    completion = client.chat.completions.create(
        model="any-model", messages=[{"role": "user", "content": "Hello!"}], temperature=0, max_tokens=12
    )

    # then it gets a proper chat.completion with a non-empty answer
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "blue"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_the_openai_model_field_names_a_deployment(served: Endpoint):
    client = OpenAI(base_url=f"http://127.0.0.1:{served.port}/v1", api_key=served.keys.secondary, max_retries=0)

    completion = client.chat.completions.create(
        model="green", messages=[{"role": "user", "content": "Hi"}], temperature=0, max_tokens=4, n=2
    )

    assert completion.model == "green"
    first, second = completion.choices
    assert first.message.content == second.message.content  # greedy: the same answer twice


def test_concurrent_requests_are_all_answered(served: Endpoint):
    # given eight clients at once
    results: list[int] = []

    def call() -> None:
        results.append(served.score(HI)[0])

    threads = [threading.Thread(target=call) for _ in range(8)]

    # when they all score
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then every one is answered
    assert results == [200] * 8


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, {"max_new_tokens": 256, "do_sample": False}),
        ({"temperature": 0.0, "do_sample": True, "top_p": 0.9}, {"max_new_tokens": 256, "do_sample": False}),
        ({"temperature": 0.6, "do_sample": False}, {"max_new_tokens": 256, "do_sample": False}),
        (
            {"temperature": 0.6, "top_p": 0.9, "do_sample": True, "max_new_tokens": 200},
            {"max_new_tokens": 200, "do_sample": True, "temperature": 0.6, "top_p": 0.9},
        ),
        ({"temperature": 0.7}, {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}),
        ({"do_sample": True, "max_new_tokens": 5000}, {"max_new_tokens": 1024, "do_sample": True, "temperature": 1.0}),
    ],
    ids=["defaults", "temperature-0-sampling", "do-sample-false", "seed", "temperature-implies-sampling", "capped"],
)
def test_generation_parameters_map_to_generate_arguments(parameters: dict, expected: dict):
    # greedy whenever do_sample is false or the temperature is 0 (transformers 5 refuses temperature 0 when sampling)
    normalized = normalize_parameters({**parameters, "unknown": 1})

    assert generate_kwargs(normalized, max_new_tokens_cap=1024, default_max_new_tokens=256) == expected


def test_temperature_zero_with_sampling_is_answered_greedily(served: Endpoint):
    parameters = {"temperature": 0, "do_sample": True, "top_p": 0.9, "max_new_tokens": 8}

    first, second = served.score(HI, parameters), served.score(HI, parameters)

    assert first[0] == 200 and first[2] == second[2]


# -- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key", "headers"),
    [
        ("/score", None, {}),
        ("/score", "not-the-key", {}),
        ("/score", None, {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("/score", None, {"Authorization": "Bearer"}),
        ("/v1/chat/completions", None, {}),
        ("/v1/chat/completions", "wrong", {}),
    ],
    ids=["no-header", "wrong-key", "basic-scheme", "empty-bearer", "openai-no-header", "openai-wrong-key"],
)
def test_requests_without_a_valid_key_are_refused(served: Endpoint, path: str, key: str | None, headers: dict):
    # given a request without a valid key
    body = {"input_data": {"input_string": HI}, "messages": HI}

    # when it is sent
    status, response_headers, answer = served.request("POST", path, body, key=key, headers=headers)

    # then it is refused with 401 and a JSON error
    assert status == 401
    assert answer["error"]["code"] == "unauthorized"
    assert response_headers["www-authenticate"].startswith("Bearer")


def test_both_keys_are_accepted(served: Endpoint):
    assert served.score(HI, key="primary")[0] == 200
    assert served.score(HI, key="secondary")[0] == 200


def test_liveness_needs_no_key(served: Endpoint):
    status, _, body = served.request("GET", "/", key=None)

    assert status == 200 and body["status"] == "ok" and body["endpoint"] == served.name


# -- malformed requests ------------------------------------------------------------------------

BAD_SCORE_BODIES = {
    "not-json": (b"{not json", "invalid_json"),
    "not-utf8": (b'{"input_data": "\xff"}', "invalid_json"),
    "empty-body": (b"", "invalid_json"),
    "json-array": (b"[1, 2]", "invalid_request"),
    "no-input-data": (json.dumps({"inputs": HI}).encode(), "missing_input_data"),
    "input-data-string": (json.dumps({"input_data": "hi"}).encode(), "missing_input_data"),
    "no-input-string": (json.dumps({"input_data": {"parameters": {}}}).encode(), "missing_input_string"),
    "input-string-text": (json.dumps({"input_data": {"input_string": "hello"}}).encode(), "missing_input_string"),
    "no-messages": (json.dumps({"input_data": {"input_string": []}}).encode(), "empty_conversation"),
    "empty-conversation": (json.dumps({"input_data": {"input_string": [[]]}}).encode(), "empty_conversation"),
    "message-not-object": (json.dumps({"input_data": {"input_string": [["hi"]]}}).encode(), "invalid_messages"),
    "mixed-shapes": (json.dumps({"input_data": {"input_string": [HI[0], HI]}}).encode(), "invalid_messages"),
    "no-content": (json.dumps({"input_data": {"input_string": [{"role": "user"}]}}).encode(), "invalid_messages"),
    "content-not-text": (
        json.dumps({"input_data": {"input_string": [{"role": "user", "content": 42}]}}).encode(),
        "invalid_messages",
    ),
    "unknown-role": (
        json.dumps({"input_data": {"input_string": [{"role": "robot", "content": "hi"}]}}).encode(),
        "unrecognized_role",
    ),
    "role-case": (
        json.dumps({"input_data": {"input_string": [{"role": "User", "content": "hi"}]}}).encode(),
        "unrecognized_role",
    ),
    "parameters-list": (
        json.dumps({"input_data": {"input_string": HI, "parameters": [1]}}).encode(),
        "invalid_parameters",
    ),
    "temperature-text": (
        json.dumps({"input_data": {"input_string": HI, "parameters": {"temperature": "hot"}}}).encode(),
        "invalid_parameter",
    ),
    "negative-temperature": (
        json.dumps({"input_data": {"input_string": HI, "parameters": {"temperature": -1}}}).encode(),
        "invalid_parameter",
    ),
    "top-p-zero": (
        json.dumps({"input_data": {"input_string": HI, "parameters": {"top_p": 0}}}).encode(),
        "invalid_parameter",
    ),
    "zero-new-tokens": (
        json.dumps({"input_data": {"input_string": HI, "parameters": {"max_new_tokens": 0}}}).encode(),
        "invalid_parameter",
    ),
    "do-sample-text": (
        json.dumps({"input_data": {"input_string": HI, "parameters": {"do_sample": "yes"}}}).encode(),
        "invalid_parameter",
    ),
    "too-many-conversations": (
        json.dumps({"input_data": {"input_string": [HI] * 17}}).encode(),
        "too_many_conversations",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SCORE_BODIES))
def test_malformed_score_requests_get_400_and_the_server_keeps_serving(served: Endpoint, case: str):
    # given a malformed body
    raw, code = BAD_SCORE_BODIES[case]

    # when it is scored
    status, _, body = served.request("POST", "/score", raw=raw)

    # then it is refused with 400 and a stable code, and the endpoint still answers
    assert status == 400, body
    assert body["error"]["code"] == code and body["error"]["message"]
    assert served.request("GET", "/", key=None)[0] == 200


BAD_CHAT_BODIES = {
    "no-messages": ({"model": "x"}, "invalid_messages"),
    "empty-messages": ({"messages": []}, "empty_conversation"),
    "stream-text": ({"messages": HI, "stream": "yes"}, "invalid_request"),
    "tool-role": ({"messages": [{"role": "tool", "content": "x"}]}, "unrecognized_role"),
    "image-part": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "invalid_messages",
    ),
    "n-too-large": ({"messages": HI, "n": 9}, "invalid_parameter"),
    "temperature-text": ({"messages": HI, "temperature": "0"}, "invalid_parameter"),
}


@pytest.mark.parametrize("case", list(BAD_CHAT_BODIES))
def test_malformed_chat_completions_get_400(served: Endpoint, case: str):
    body, code = BAD_CHAT_BODIES[case]

    status, _, answer = served.request("POST", "/v1/chat/completions", body)

    assert status == 400, answer
    assert answer["error"]["code"] == code


def test_an_oversized_body_gets_413_and_is_not_read(served: Endpoint):
    # given a body over the 1 MiB limit
    huge = json.dumps({"input_data": {"input_string": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}})

    # when it is sent
    status, headers, body = served.request("POST", "/score", raw=huge.encode())

    # then it is refused with 413 and the connection is closed
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert headers["connection"] == "close"

    # and a client that only declares 1 GB gets its 413 at once, without sending it
    reply = served.raw_score(b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{")
    assert reply.startswith(b"HTTP/1.1 413")

    # and the endpoint keeps serving
    assert served.score(HI)[0] == 200


def test_a_body_without_content_length_gets_411(served: Endpoint):
    reply = served.raw_score(b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    assert reply.startswith(b"HTTP/1.1 411")
    assert served.request("GET", "/", key=None)[0] == 200


def test_a_client_that_hangs_up_mid_body_does_not_hurt_the_server(served: Endpoint):
    served.raw_score(b'Content-Length: 500\r\n\r\n{"input_data"', read=False)  # and hangs up

    assert served.score(HI)[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/v2/score", 404),
        ("GET", "/score", 405),
        ("DELETE", "/score", 405),
        ("POST", "/", 405),
        ("OPTIONS", "/score", 501),
    ],
)
def test_unknown_routes_and_methods(served: Endpoint, method: str, path: str, status: int):
    answer_status, _, body = served.request(method, path, {} if method == "POST" else None)

    assert answer_status == status
    assert body["error"]["code"] and body["error"]["message"]


# -- routing and traffic -----------------------------------------------------------------------


def test_the_deployment_header_pins_a_deployment_without_traffic(served: Endpoint):
    # given blue with all the traffic and green with none
    assert served.config()["traffic"] == {"blue": 100, "green": 0}
    before = served.stats()["per_deployment"].get("green", 0)

    # when a request names green in the header
    status, headers, _ = served.score(HI, headers={"azureml-model-deployment": "green"})

    # then green answers it, and the statistics say so
    assert status == 200
    assert headers["azureml-model-deployment"] == "green"
    assert served.stats()["per_deployment"]["green"] == before + 1


def test_an_unknown_pinned_deployment_gets_404(served: Endpoint):
    status, _, body = served.score(HI, headers={"azureml-model-deployment": "purple"})

    assert status == 404 and body["error"]["code"] == "deployment_not_found"


def test_traffic_changes_take_effect_without_a_restart(served: Endpoint, endpoints: LocalEndpoints):
    router_pid = served.config()["router_pid"]
    try:
        # when all traffic moves to green
        info = endpoints.set_traffic(served.name, {"green": 100})

        # then unpinned requests go to green, served by the same router process
        assert dict(info.traffic) == {"blue": 0, "green": 100}
        assert {served.score(HI)[1]["azureml-model-deployment"] for _ in range(3)} == {"green"}

        # and with no traffic anywhere, unpinned requests get 503 while pinned ones still work
        endpoints.set_traffic(served.name, {"blue": 0, "green": 0})
        status, _, body = served.score(HI)
        assert status == 503 and body["error"]["code"] == "no_traffic"
        assert served.score(HI, headers={"azureml-model-deployment": "blue"})[0] == 200
        assert served.config()["router_pid"] == router_pid
    finally:
        endpoints.set_traffic(served.name, {"blue": 100, "green": 0})


@pytest.mark.parametrize(
    "traffic",
    [
        {"purple": 100},
        {"blue": 101},
        {"blue": -10, "green": 110},
        {"blue": 50, "green": 40},
        {"blue": 50.0, "green": 50},
        {"blue": True},
    ],
    ids=["unknown-deployment", "over-100", "negative", "sum-90", "float", "bool"],
)
def test_invalid_traffic_is_refused(served: Endpoint, endpoints: LocalEndpoints, traffic: dict):
    with pytest.raises(InvalidTraffic) as raised:
        endpoints.set_traffic(served.name, traffic)

    assert raised.value.code == "invalid_traffic" and not raised.value.transient
    assert served.config()["traffic"] == {"blue": 100, "green": 0}


# -- accounting, keys, logs --------------------------------------------------------------------


def test_requests_are_counted_but_liveness_and_refusals_are_not(served: Endpoint, endpoints: LocalEndpoints):
    # given the statistics so far
    served.score(HI)
    before = served.stats()
    time.sleep(0.01)

    # when there is a liveness probe, a refused request and two scoring requests
    served.request("GET", "/", key=None)
    served.score(HI, key="bad-key")
    served.score(HI)
    served.request("POST", "/v1/chat/completions", {"messages": HI, "temperature": 0, "max_tokens": 4})

    # then exactly the two scoring requests count, and the time of the last one advanced
    after = served.stats()
    assert after["request_count"] == before["request_count"] + 2
    assert datetime.fromisoformat(after["last_request_at"]) > datetime.fromisoformat(before["last_request_at"])
    listed = endpoints.get_endpoint(served.name)
    assert listed.request_count == after["request_count"]
    assert listed.last_request_at == datetime.fromisoformat(after["last_request_at"])


def test_keys_are_private_stable_and_never_logged(served: Endpoint, endpoints: LocalEndpoints):
    # given an endpoint that has served requests, some with a wrong key
    keys = endpoints.get_keys(served.name)
    served.score(HI, key="definitely-wrong-key")

    # when it is created again with other tags
    info = endpoints.create_or_update_endpoint(served.name, {MANAGED_TAG: "true", "model": "tiny-chat"})

    # then the keys, port and router are the same, and the tags are the new ones
    assert endpoints.get_keys(served.name) == keys and keys.primary != keys.secondary
    assert _port(info) == served.port and dict(info.tags) == {MANAGED_TAG: "true", "model": "tiny-chat"}
    assert stat.S_IMODE((served.folder / "keys.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(served.folder.stat().st_mode) == 0o700
    assert "primary" not in repr(keys) and keys.primary not in repr(keys)

    # and no key appears in any log
    logs = [served.folder / "router.log", *sorted((served.folder / "deployments").glob("*/server.log"))]
    assert len(logs) >= 3
    for log in logs:
        text = log.read_text()
        for secret in (keys.primary, keys.secondary, "definitely-wrong-key"):
            assert secret not in text, f"a key leaked into {log}"


def test_invoke_uses_the_key_and_maps_refusals(served: Endpoint, endpoints: LocalEndpoints):
    request = {"input_data": {"input_string": [HI], "parameters": GREEDY}, "params": {}}

    assert isinstance(endpoints.invoke(served.name, request, "green")["output"], list)
    with pytest.raises(DeploymentNotFound):
        endpoints.invoke(served.name, request, "purple")
    with pytest.raises(ScoringRejected) as raised:
        endpoints.invoke(served.name, {"input_data": {"input_string": [{"role": "robot", "content": "x"}]}})
    assert raised.value.code == "unrecognized_role"
    with pytest.raises(EndpointNotFound):
        endpoints.invoke("ep-absent", request)


def test_deployments_are_listed_with_their_model_and_state(served: Endpoint, endpoints: LocalEndpoints):
    deployments = endpoints.list_deployments(served.name)

    assert [(d.name, d.state, d.model.name, d.model.version) for d in deployments] == [
        ("blue", "Succeeded", "tiny-chat", "1"),
        ("green", "Succeeded", "tiny-chat", "1"),
    ]
    assert endpoints.create_deployment(served.name, "blue", MODEL, Path("/nonexistent")).state == "Succeeded"


# -- names and absent things -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "1abc", "-abc", "abc-", "a" * 33, "ep_under", "ep.dot", "../escape", ""])
def test_invalid_endpoint_names_are_refused(endpoints: LocalEndpoints, name: str):
    with pytest.raises(InvalidName):
        endpoints.create_or_update_endpoint(name, {})


def test_absent_things_are_not_found_and_deleting_them_is_a_no_op(endpoints: LocalEndpoints, served: Endpoint):
    assert endpoints.get_endpoint("ep-absent") is None
    assert endpoints.get_endpoint("../etc") is None
    endpoints.delete_endpoint("ep-absent")
    endpoints.delete_deployment("ep-absent", "blue")
    endpoints.delete_deployment(served.name, "purple")
    with pytest.raises(EndpointNotFound):
        endpoints.set_traffic("ep-absent", {})
    with pytest.raises(EndpointNotFound):
        endpoints.create_deployment("ep-absent", "blue", MODEL, Path("/nonexistent"))
    with pytest.raises(EndpointNotFound):
        endpoints.get_keys("ep-absent")


def test_a_deployment_that_cannot_load_fails_cleanly(endpoints: LocalEndpoints, served: Endpoint, tmp_path: Path):
    # given a folder that only looks like a model
    (tmp_path / "config.json").write_text("{}")

    # when it is deployed
    with pytest.raises(DeploymentFailed) as raised:
        endpoints.create_deployment(served.name, "broken", MODEL, tmp_path)

    # then the error says why (the end of its log), and nothing of it is left in the endpoint
    assert raised.value.code == "deployment_failed" and not raised.value.transient
    assert "did not start" in raised.value.message
    assert "broken" not in served.config()["deployments"] and "broken" not in served.config()["traffic"]
    with pytest.raises(DeploymentFailed):
        endpoints.create_deployment(served.name, "missing", MODEL, tmp_path / "nothing-here")


# -- crash, restart, delete --------------------------------------------------------------------


def test_crashes_are_repaired_restarts_find_everything_and_delete_stops_everything(
    state_dir: Path, endpoints: LocalEndpoints, tiny_model: Path
):
    endpoint = _endpoint(endpoints, "ep-lifecycle")
    try:
        endpoints.create_deployment(endpoint.name, "solo", MODEL, tiny_model)
        endpoints.set_traffic(endpoint.name, {"solo": 100})
        first = endpoint.config()
        deployment_pid = first["deployments"]["solo"]["pid"]

        # when the deployment process dies, requests get 502 and the deployment shows as failed
        os.kill(deployment_pid, signal.SIGKILL)
        assert eventually(lambda: endpoints.get_deployment(endpoint.name, "solo").state == "Failed")
        status, _, body = endpoint.score(HI)
        assert status == 502 and body["error"]["code"] == "deployment_unavailable"

        # then creating it again starts it again, traffic kept
        assert endpoints.create_deployment(endpoint.name, "solo", MODEL, tiny_model).state == "Succeeded"
        assert endpoint.score(HI)[0] == 200

        # when the router dies and the caller restarts, a new LocalEndpoints finds the endpoint from its files
        os.kill(first["router_pid"], signal.SIGKILL)
        fresh = LocalEndpoints(state_dir)
        listed = {info.name: info for info in fresh.list_endpoints()}
        assert dict(listed[endpoint.name].traffic) == {"solo": 100}
        assert listed[endpoint.name].request_count >= 2
        assert eventually(lambda: not fresh.endpoint_alive(endpoint.name))

        # and create_or_update_endpoint restarts the router on the same port, with the same keys
        info = fresh.create_or_update_endpoint(endpoint.name, {MANAGED_TAG: "true"})
        assert _port(info) == endpoint.port and fresh.get_keys(endpoint.name) == endpoints.get_keys(endpoint.name)
        assert fresh.endpoint_alive(endpoint.name)
        assert endpoint.score(HI)[0] == 200

        # when the endpoint is deleted
        config = endpoint.config()
        pids = [config["router_pid"], *(spec["pid"] for spec in config["deployments"].values())]
        fresh.delete_endpoint(endpoint.name)

        # then every process is gone, the port refuses connections, and nothing is listed
        assert all(_pid_gone(pid) for pid in pids), pids
        assert _refuses(endpoint.port)
        assert not endpoint.folder.exists()
        assert endpoint.name not in {info.name for info in fresh.list_endpoints()}
        fresh.delete_endpoint(endpoint.name)  # idempotent
    finally:
        endpoints.delete_endpoint(endpoint.name)


def test_an_engine_error_is_what_callers_catch():
    assert issubclass(EndpointNotFound, EngineError) and issubclass(DeploymentFailed, EngineError)


def test_a_deleted_endpoint_comes_back_on_the_same_scoring_uri(endpoints: LocalEndpoints):
    # given an endpoint, torn down (the idle sweep deletes the whole endpoint)
    first = endpoints.create_or_update_endpoint("ep-comes-back", {MANAGED_TAG: "true"})
    endpoints.delete_endpoint("ep-comes-back")
    assert endpoints.get_endpoint("ep-comes-back") is None

    # when it is created again (a restore)
    again = endpoints.create_or_update_endpoint("ep-comes-back", {MANAGED_TAG: "true"})
    try:
        # then clients keep their URL
        assert again.scoring_uri == first.scoring_uri
    finally:
        endpoints.delete_endpoint("ep-comes-back")
