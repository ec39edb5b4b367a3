"""Lifecycle notifications on a custom Event Grid topic, when one is configured (azure-eventgrid).

Published: a run deployed (succeeded), failed, rejected or gated out; an endpoint torn down or restored.
Notifying is best effort: a failed publish is logged, never raised, so it cannot undo the lifecycle step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.domain.runs import RunRecord

logger = logging.getLogger(__name__)

EVENT_PREFIX = "FtAutopilot."
RUN_SUCCEEDED = EVENT_PREFIX + "RunSucceeded"
RUN_FAILED = EVENT_PREFIX + "RunFailed"
RUN_REJECTED = EVENT_PREFIX + "RunRejected"
RUN_GATED_OUT = EVENT_PREFIX + "RunGatedOut"
ENDPOINT_TORN_DOWN = EVENT_PREFIX + "EndpointTornDown"
ENDPOINT_RESTORED = EVENT_PREFIX + "EndpointRestored"


class Notifier(Protocol):
    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None: ...


class NoNotifier:
    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        return None


class EventGridNotifier:
    def __init__(self, endpoint: str, key: str | None = None, client_id: str | None = None) -> None:
        from azure.eventgrid import EventGridPublisherClient

        if key:
            from azure.core.credentials import AzureKeyCredential

            credential: Any = AzureKeyCredential(key)
        else:
            from azure.identity import DefaultAzureCredential  # managed identity in Azure

            credential = DefaultAzureCredential(managed_identity_client_id=client_id)
        self._client = EventGridPublisherClient(endpoint, credential, retry_total=2)

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        from azure.core.exceptions import AzureError
        from azure.eventgrid import EventGridEvent

        try:
            self._client.send(EventGridEvent(subject=subject, event_type=event_type, data=data, data_version="1.0"))
        except AzureError as exc:
            logger.warning("notification %s for %s not published: %s", event_type, subject, exc)


_ANNOUNCED = {
    "deployed": RUN_SUCCEEDED,
    "failed": RUN_FAILED,
    "rolled_back": RUN_FAILED,
    "rejected": RUN_REJECTED,
    "gated_out": RUN_GATED_OUT,
    "torn_down": ENDPOINT_TORN_DOWN,
}


def announce(notifier: Notifier, record: RunRecord) -> None:
    """Publish the notification for a run that a transition just moved, when its new state is worth announcing
    (the ledger's transition hook calls this once per move)."""
    run_id = record.run_id
    if record.state in _ANNOUNCED:
        last = record.history[-1]
        event_type = _ANNOUNCED[record.state]
        if record.state == "deployed" and last.from_state == "deploying" and _restored(record):
            event_type = ENDPOINT_RESTORED
        notifier.publish(
            event_type,
            f"runs/{run_id}",
            {
                "runId": run_id,
                "state": record.state.value,
                "reason": last.reason,
                "model": record.model.model_dump() if record.model else None,
                "endpoint": record.endpoint.name if record.endpoint else None,
                "scoringUri": record.endpoint.scoring_uri if record.endpoint else None,
                "error": record.error.model_dump() if record.error else None,
            },
        )


def _restored(record: RunRecord) -> bool:
    return any(t.from_state == "torn_down" for t in record.history)
