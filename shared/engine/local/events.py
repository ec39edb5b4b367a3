"""Azure ML run events, as the local engine emits them: the Event Grid schema Azure ML uses, delivered to a
webhook (the Functions path /runtime/webhooks/eventgrid?functionName=on_job_event) or an in-process callback.

Delivery is retried with backoff and never raises: a lost event is caught later by the reconciler, a crashed
training job is not.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.adapters.http import post_json
from shared.api.events import PIPELINE_RUN, RUN_COMPLETED, RUN_STATUS_CHANGED
from shared.domain.jobs import TO_AZURE, JobStatus

logger = logging.getLogger(__name__)


EventCallback = Callable[[dict[str, Any]], None]


def run_events(
    *, job_name: str, status: JobStatus, tags: Mapping[str, str], experiment_name: str, topic: str
) -> list[dict[str, Any]]:
    """The events Azure ML sends for a status change: RunStatusChanged, plus RunCompleted on success."""
    experiment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ft-autopilot/{experiment_name}"))
    data = {
        "experimentId": experiment_id,
        "experimentName": experiment_name,
        "runId": job_name,
        "runType": PIPELINE_RUN,
        "runTags": dict(tags),
        "runProperties": {"azureml.runsource": PIPELINE_RUN},
        "runStatus": TO_AZURE[status],
    }
    types = [RUN_STATUS_CHANGED] + ([RUN_COMPLETED] if status == JobStatus.COMPLETED else [])
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return [
        {
            "topic": topic,
            "subject": f"experiments/{experiment_id}/runs/{job_name}",
            "eventType": event_type,
            "eventTime": now,
            "id": str(uuid.uuid4()),
            "data": {k: v for k, v in data.items() if k != "runStatus" or event_type == RUN_STATUS_CHANGED},
            "dataVersion": "2",
            "metadataVersion": "1",
        }
        for event_type in types
    ]


class EventDelivery:
    def __init__(
        self,
        webhook_url: str | None = None,
        callback: EventCallback | None = None,
        *,
        attempts: int = 5,
        first_backoff_s: float = 0.5,
        timeout_s: float = 30.0,
    ) -> None:
        self._webhook_url = webhook_url
        self._callback = callback
        self._attempts = attempts
        self._first_backoff_s = first_backoff_s
        self._timeout_s = timeout_s

    def deliver(self, event: dict[str, Any]) -> bool:
        """True when every configured destination took the event. Never raises."""
        delivered = True
        if self._callback is not None:
            delivered &= self._with_retries(event, self._call_back, "callback")
        if self._webhook_url:
            delivered &= self._with_retries(event, self._post, "webhook")
        return delivered

    def _with_retries(self, event: dict[str, Any], send: Callable[[dict[str, Any]], None], where: str) -> bool:
        backoff = self._first_backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                send(event)
                return True
            except Exception as exc:  # delivery must never crash the job
                logger.warning(
                    "event %s %s for run %s: %s delivery attempt %d/%d failed: %s",
                    event["eventType"].rsplit(".", 1)[-1],
                    event["data"].get("runStatus", ""),
                    event["data"]["runId"],
                    where,
                    attempt,
                    self._attempts,
                    exc,
                )
                if attempt < self._attempts:
                    time.sleep(backoff)
                    backoff *= 2
        return False

    def _call_back(self, event: dict[str, Any]) -> None:
        assert self._callback is not None
        self._callback(event)

    def _post(self, event: dict[str, Any]) -> None:
        url = self._webhook_url
        assert url is not None  # deliver() posts only when there is a webhook URL
        post_json(url, [event], headers={"aeg-event-type": "Notification"}, timeout_s=self._timeout_s, answer=False)
