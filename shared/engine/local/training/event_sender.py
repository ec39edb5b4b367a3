"""The worker's status events, delivered in order on a background thread (the event shapes and the delivery with
retries are shared.engine.local.events)."""

from __future__ import annotations

import queue
import threading
from typing import Any

from shared.domain.jobs import JobStatus
from shared.engine.local.events import EventDelivery, run_events
from shared.engine.local.jobfiles import TrainingJob

EVENT_DRAIN_S = 60.0  # how long a finished worker waits for a slow webhook before it exits anyway


class EventSender:
    """Delivers status-change events in order on a background thread: a slow or dead webhook never holds up
    training. `close` waits (bounded) for what is queued."""

    def __init__(self, job: TrainingJob) -> None:
        self._job = job
        self._delivery = EventDelivery(job.webhook_url)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._undelivered = 0
        self._thread: threading.Thread | None = None
        if job.webhook_url:
            self._thread = threading.Thread(target=self._run, name="job-events", daemon=True)
            self._thread.start()

    def send(self, status: JobStatus) -> None:
        if self._thread is None:
            return
        job = self._job
        for event in run_events(
            job_name=job.name, status=status, tags=job.tags, experiment_name=job.experiment_name, topic=job.event_topic
        ):
            self._queue.put(event)

    def close(self, timeout_s: float = EVENT_DRAIN_S) -> bool:
        """True when every event was delivered (or there was nowhere to deliver them)."""
        if self._thread is None:
            return True
        self._queue.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive() and self._undelivered == 0

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            if not self._delivery.deliver(event):
                self._undelivered += 1
