"""Start and stop a real Azurite blob emulator on a free loopback port (tests, the demo, the dev host)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared.engine.local.processes import free_port

# Azurite's well-known development account (public, documented; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO_ROOT = Path(__file__).resolve().parents[2]


class AzuriteUnavailable(RuntimeError):
    pass


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    port: int
    location: Path

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        """Stop the server by its PID (it is the node process itself, not an npx wrapper)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def find_azurite_blob() -> Path:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return local
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise AzuriteUnavailable("azurite-blob not found: run `make deps` (npm install) first")


def start_azurite(location: Path, *, port: int | None = None, timeout_s: float = 30.0) -> Azurite:
    location.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(location / "azurite.log", "ab")  # noqa: SIM115 (owned by the child for its lifetime)
    process = subprocess.Popen(
        [
            str(find_azurite_blob()),
            "--silent",
            "--location",
            str(location),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = Azurite(process=process, port=port, location=location)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AzuriteUnavailable(f"azurite exited with {process.returncode}; see {location / 'azurite.log'}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.05)
    server.stop()
    raise AzuriteUnavailable(f"azurite did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")
