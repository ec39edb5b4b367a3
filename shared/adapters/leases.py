"""One writer per endpoint: a blob lease, held (and renewed) for the length of one change to the endpoint.

Every change to an endpoint's deployments or traffic (deploy, shift, retire, roll back, restore, tear down) runs
inside `hold`, and so does a run's evaluation (one delivery evaluates; the others leave it be). The lease blobs
live under leases/ in the runs container. A process that dies while holding one loses it when its last renewal
runs out (LEASE_SECONDS), so nothing stays locked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from shared.adapters.storage import BlobStore, HeldLease
from shared.domain.errors import AutopilotError

logger = logging.getLogger(__name__)

LEASES = "leases/"
LEASE_SECONDS = 30  # Azure allows 15-60 s (or infinite, which a crash would leave behind)
RENEW_EVERY_S = 10
RETRY_EVERY_S = 0.5


class EndpointBusy(AutopilotError):
    """Another change to the endpoint is under way; raised after waiting, so the platform delivers again."""

    code = "endpoint_busy"
    http_status = 503
    transient = True


class EvaluationUnderWay(AutopilotError):
    """Another delivery is evaluating the run (its lease is held): this one leaves it be."""

    code = "evaluation_under_way"
    http_status = 503
    transient = True


class Leases:
    def __init__(self, store: BlobStore, container: str) -> None:
        self._store = store
        self._container = container

    @contextmanager
    def hold(self, name: str, *, wait_s: float, busy: type[AutopilotError] = EndpointBusy) -> Iterator[None]:
        """Run the block as the only holder of `name`; waits up to `wait_s` for it, then raises `busy`."""
        lease = self._take(name, wait_s, busy)
        stop = threading.Event()
        renewer = threading.Thread(target=_keep_renewing, args=(lease, name, stop), name=f"lease {name}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                lease.release()
            except AutopilotError as exc:  # it runs out by itself within LEASE_SECONDS
                logger.warning("lease %s not released: %s", name, exc.message)

    def _take(self, name: str, wait_s: float, busy: type[AutopilotError]) -> HeldLease:
        deadline = time.monotonic() + wait_s
        while True:
            lease = self._store.try_lease(self._container, LEASES + name, LEASE_SECONDS)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                raise busy(f"{name} is held by another delivery; waited {wait_s:g} s, will be retried")
            time.sleep(RETRY_EVERY_S)


def _keep_renewing(lease: HeldLease, name: str, stop: threading.Event) -> None:
    while not stop.wait(RENEW_EVERY_S):
        try:
            lease.renew()
        except AutopilotError as exc:
            logger.error("lease %s could not be renewed (%s): another change may start", name, exc.message)
