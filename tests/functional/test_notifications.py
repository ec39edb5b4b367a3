"""Lifecycle notifications reach a custom Event Grid topic (here: a loopback server speaking its protocol)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.adapters.notifications import EventGridNotifier
from shared.context import AppContext
from tests.fakes import FakeEngine
from tests.functional.test_intake import BROKEN, upload
from tests.functional.test_lifecycle import event_for, on_dataset_uploaded, on_job_event, trained_run


class Topic:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.keys: list[str | None] = []
        self.fail_next = 0


@pytest.fixture
def topic(ctx: AppContext) -> Iterator[Topic]:
    received = Topic()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if received.fail_next:
                received.fail_next -= 1
                self.send_response(503)
            else:
                received.keys.append(self.headers.get("aeg-sas-key"))
                received.events.extend(body)
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx.notifier = EventGridNotifier(f"http://127.0.0.1:{server.server_port}/api/events", key="topic-key")
    yield received
    server.shutdown()
    server.server_close()


def test_a_deployed_run_is_announced_once(ctx: AppContext, engine: FakeEngine, topic: Topic):
    # given a trained run
    run = trained_run(ctx, engine)

    # when its completion is delivered twice
    on_job_event(event_for(run.run_id))
    on_job_event(event_for(run.run_id))

    # then one RunSucceeded was published, with the topic key, naming the endpoint
    assert [e["eventType"] for e in topic.events] == ["FtAutopilot.RunSucceeded"]
    event = topic.events[0]
    assert event["subject"] == f"runs/{run.run_id}"
    assert event["data"]["state"] == "deployed" and event["data"]["endpoint"].startswith("ep-")
    assert topic.keys == ["topic-key"]


def test_a_rejected_dataset_is_announced(ctx: AppContext, topic: Topic):
    on_dataset_uploaded(upload(ctx.settings, "broken.jsonl", BROKEN))

    assert [e["eventType"] for e in topic.events] == ["FtAutopilot.RunRejected"]


def test_a_topic_that_is_down_does_not_undo_the_lifecycle(ctx: AppContext, engine: FakeEngine, topic: Topic):
    topic.fail_next = 10  # more than the client's retries
    run = trained_run(ctx, engine)

    on_job_event(event_for(run.run_id))

    assert ctx.ledger.get(run.run_id).state == "deployed"
    assert topic.events == []
