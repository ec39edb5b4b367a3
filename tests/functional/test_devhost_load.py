"""The dev host under load: many concurrent requests are all answered (queued for a bounded pool of workers),
none reset. Real HTTP on loopback, the session's Azurite, the fake engine."""

from __future__ import annotations

import json
import random
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from benchmarks.make_chat_jsonl import conversation
from shared.devhost import DevHost
from shared.devhost.server import WORKER_THREADS
from tests.functional.test_devhost import engine, host  # noqa: F401 (fixtures)

CLIENTS = 70
BODY_BYTES = 1024 * 1024


def one_megabyte_dataset() -> bytes:
    rng, lines, size = random.Random(7), [], 0
    while size < BODY_BYTES:
        line = json.dumps(conversation(rng)).encode() + b"\n"
        lines.append(line)
        size += len(line)
    return b"".join(lines)


def test_seventy_concurrent_validations_of_one_megabyte_get_seventy_answers(host: DevHost):  # noqa: F811
    # given 70 clients, more than the host's workers, each with a 1 MB dataset
    assert CLIENTS > WORKER_THREADS
    data = one_megabyte_dataset()

    def validate(_: int) -> tuple[int, bool]:
        request = urllib.request.Request(
            host.base_url + "/api/validate",
            data=data,
            method="POST",
            headers={"x-functions-key": host.function_key, "Content-Type": "application/x-ndjson"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())["valid"]

    # when they all send at once
    with ThreadPoolExecutor(CLIENTS) as clients:
        answers = list(clients.map(validate, range(CLIENTS)))

    # then every one is answered, none reset: 70 reports, all valid
    assert answers == [(200, True)] * CLIENTS
