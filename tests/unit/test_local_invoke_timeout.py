"""The local engine's invoke honours its timeout: a scoring endpoint that accepts the request and never answers is a
`scoring_timeout` (transient) once timeout_s has passed, not a hung caller. No model, no child process: the endpoint's
files (the layout endpoints.py documents) name a loopback port where a socket listens and never answers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.domain.errors import EngineError
from shared.engine.local.endpoints import LocalEndpoints
from shared.engine.local.serving.router import ENDPOINT_FILE, KEYS_FILE

REQUEST = {"input_data": {"input_string": [{"role": "user", "content": "Hi!"}], "parameters": {}}, "params": {}}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections (the kernel's backlog completes them) and never sends a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        yield listener.getsockname()[1]


def endpoint_on(state_dir: Path, name: str, port: int) -> LocalEndpoints:
    folder = state_dir / "endpoints" / name
    folder.mkdir(parents=True)
    (folder / ENDPOINT_FILE).write_text(json.dumps({"name": name, "port": port, "traffic": {}, "deployments": {}}))
    (folder / KEYS_FILE).write_text(json.dumps({"primary": "p" * 43, "secondary": "s" * 43}))
    return LocalEndpoints(state_dir)


def test_an_endpoint_that_never_answers_times_out_with_a_stable_code(tmp_path: Path, silent_port: int):
    # given an endpoint whose server takes the request and says nothing
    endpoints = endpoint_on(tmp_path, "ep-silent", silent_port)

    # when it is invoked with a timeout of 0.3 s
    started = time.monotonic()
    with pytest.raises(EngineError) as raised:
        endpoints.invoke("ep-silent", REQUEST, "blue", timeout_s=0.3)
    waited = time.monotonic() - started

    # then the caller got a transient scoring_timeout soon after the timeout
    assert raised.value.code == "scoring_timeout" and raised.value.transient is True
    assert raised.value.message == "endpoint ep-silent did not answer within 0.3 s"
    assert 0.3 <= waited < 3.0


def test_an_endpoint_that_refuses_connections_is_unavailable_not_timed_out(tmp_path: Path):
    # given an endpoint whose port nobody listens on
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    endpoints = endpoint_on(tmp_path, "ep-gone", closed_port)

    # when it is invoked
    with pytest.raises(EngineError) as raised:
        endpoints.invoke("ep-gone", REQUEST, timeout_s=5.0)

    # then the error says it is not answering, which is not a timeout
    assert raised.value.code == "endpoint_unavailable" and raised.value.transient is True
