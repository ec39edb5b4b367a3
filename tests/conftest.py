"""Shared fixtures: a real Azurite per test session, and per-test containers and app context. No test may open a
socket to anything but loopback (Azure, the model hubs and every other address are off-limits here)."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.azurite import Azurite, start_azurite
from shared.context import AppContext, install_context
from shared.settings import Settings
from tests.fakes import FakeEngine

EVENTS = Path(__file__).parent / "events"


@pytest.fixture(scope="session", autouse=True)
def loopback_only() -> Iterator[None]:
    """Refuse, in this process, every connection that does not go to a loopback address."""
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address) -> None:
        if isinstance(address, tuple) and not _is_loopback(str(address[0])):
            raise AssertionError(f"a test tried to connect to {address[0]}: only loopback may be reached")
        return connect(sock, address)

    socket.socket.connect = guarded  # type: ignore[method-assign]
    yield
    socket.socket.connect = connect  # type: ignore[method-assign]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


def settings_for(azurite: Azurite, tmp_path: Path, **changes: Any) -> Settings:
    """Settings pointing at the session's Azurite, with containers of this test's own, and `changes`."""
    suffix = uuid.uuid4().hex[:10]
    defaults: dict[str, Any] = {
        "datasets_container": f"datasets-{suffix}",
        "runs_container": f"runs-{suffix}",
        "local_state_dir": tmp_path / "state",
        "idle_sweep_schedule": "0 0 0 1 1 *",  # the dev host runs timers: keep the sweep out of unrelated tests
    }
    return Settings(storage_connection_string=azurite.connection_string, **{**defaults, **changes})


@pytest.fixture
def settings(azurite: Azurite, tmp_path: Path) -> Settings:
    return settings_for(azurite, tmp_path)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def ctx(settings: Settings, engine: FakeEngine) -> Iterator[AppContext]:
    """The context every registered function of this test will use (as the host process would build it)."""
    context = AppContext.from_settings(settings, engine_factory=lambda: engine)
    context.store.ensure_container(settings.datasets_container)
    context.ledger.ensure_ready()
    install_context(context)
    yield context
    install_context(None)
