"""The app's one JSON-over-HTTP client against a real loopback server: each way a call can go wrong is told
apart, as the callers' error codes need."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.adapters.http import HttpFailure, get_bytes, get_json, post_json

ANSWERS = {
    "/ok": (200, b'{"output": "hi"}'),
    "/empty": (200, b""),
    "/text": (200, b"accepted"),
    "/refused": (422, b'{"error": {"code": "invalid_input"}}'),
    "/throttled": (429, b"slow down"),
    "/broken": (503, b"down"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append({"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)})
            if self.path == "/slow":
                time.sleep(1.0)
            status, body = ANSWERS.get(self.path, (200, b"{}"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", received
    httpd.shutdown()
    httpd.server_close()


def test_a_json_answer_is_parsed_and_the_payload_sent_as_json(server):
    url, received = server

    answer = post_json(f"{url}/ok", {"input_data": [1]}, headers={"Authorization": "Bearer k"}, timeout_s=5)

    assert answer == {"output": "hi"}
    assert json.loads(received[-1]["body"]) == {"input_data": [1]}
    assert received[-1]["headers"]["Content-Type"] == "application/json"
    assert received[-1]["headers"]["Authorization"] == "Bearer k"


def test_an_empty_answer_is_none_and_an_unread_one_is_not_parsed(server):
    url, _ = server

    assert get_json(f"{url}/empty", timeout_s=5) is None
    assert post_json(f"{url}/text", [{"event": 1}], timeout_s=5, answer=False) is None


def test_an_answer_that_is_not_json_says_so(server):
    url, _ = server

    with pytest.raises(HttpFailure) as raised:
        get_json(f"{url}/text", timeout_s=5)

    assert raised.value.not_json and raised.value.status == 200 and not raised.value.unreachable


@pytest.mark.parametrize(
    ("path", "status", "refused"), [("/refused", 422, True), ("/throttled", 429, False), ("/broken", 503, False)]
)
def test_an_error_status_keeps_its_code_and_body(server, path, status, refused):
    url, _ = server

    with pytest.raises(HttpFailure) as raised:
        post_json(f"{url}{path}", {}, timeout_s=5)

    failure = raised.value
    assert (failure.status, failure.refused, failure.timed_out) == (status, refused, False)
    assert failure.body == ANSWERS[path][1].decode()


def test_no_answer_in_time_is_a_timeout(server):
    url, _ = server

    with pytest.raises(HttpFailure) as raised:
        post_json(f"{url}/slow", {}, timeout_s=0.2)

    assert raised.value.timed_out and raised.value.status is None and raised.value.message == "no answer within 0.2 s"


def test_no_connection_is_unreachable():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(HttpFailure) as raised:
        get_json(f"http://127.0.0.1:{port}/", timeout_s=2)

    assert raised.value.unreachable and raised.value.status is None


def test_a_probe_reads_any_status(server):
    url, _ = server

    assert get_bytes(f"{url}/broken", timeout_s=5) == (503, b"down")
