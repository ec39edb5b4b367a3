"""The dev host as the end-to-end tests run it: the real local engine with the tiny model, the session's Azurite, a
fast idle sweep; every endpoint it made is deleted when it stops."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient

from shared.adapters.azurite import Azurite, free_port
from shared.context import get_context
from shared.devhost import DevHost
from shared.settings import Settings


@contextmanager
def local_dev_host(azurite: Azurite, state_dir: Path, containers: str, **settings: Any) -> Iterator[DevHost]:
    """A started dev host whose containers are `<containers>-datasets` and `<containers>-runs`."""
    defaults: dict[str, Any] = {"idle_minutes": 0.1, "idle_grace_minutes": 0, "idle_sweep_schedule": "*/2 * * * * *"}
    config = Settings(
        engine="local",
        local_base_model="tiny",
        storage_connection_string=azurite.connection_string,
        datasets_container=f"{containers}-datasets",
        runs_container=f"{containers}-runs",
        local_state_dir=state_dir,
        **{**defaults, **settings},
    )
    dev = DevHost(config, port=free_port(), announce=lambda text: None).start()
    try:
        yield dev
    finally:
        engine = get_context().engine
        for endpoint in engine.list_endpoints():
            engine.delete_endpoint(endpoint.name)
        dev.stop()


def put_dataset(host: DevHost, name: str, data: bytes) -> None:
    """Upload to the host's datasets container, as a user would."""
    service = BlobServiceClient.from_connection_string(host.connection_string)
    service.get_blob_client(host.settings.datasets_container, name).upload_blob(data, overwrite=True)


def run_of(host: DevHost, blob: str, timeout_s: float = 60) -> dict:
    """The run an upload to the host's datasets container became, once it is recorded."""
    from tests.e2e.test_lifecycle_e2e import call

    source = f"{host.settings.datasets_container}/{blob}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in call(host, "GET", "/api/runs?limit=1000")[1]["runs"]:
            if source in run["sources"]:
                return run
        time.sleep(0.3)
    raise AssertionError(f"no run for {blob} within {timeout_s} s")
