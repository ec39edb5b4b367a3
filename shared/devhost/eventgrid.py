"""The Event Grid webhooks, `/runtime/webhooks/eventgrid` and `/runtime/webhooks/blobs` (`?functionName=`):
the validation handshake, one invocation per event (Event Grid schema or CloudEvents), 500 when a handler raised
so that the sender retries."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from shared.devhost.blobs import BlobDelivery, BlobWatch
from shared.devhost.indexing import HostedFunction
from shared.devhost.invocation import invoke
from shared.devhost.keys import KEY_PARAMETER
from shared.devhost.replies import Reply

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/runtime/webhooks/eventgrid"
SUBSCRIPTION_VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


class EventGridWebhooks:
    """Deliveries to Event Grid-triggered functions, and BlobCreated events to blob-triggered ones."""

    def __init__(
        self, functions: Mapping[str, HostedFunction], watches: Sequence[BlobWatch], deliver_blob: BlobDelivery
    ) -> None:
        self._functions = functions
        self._watches = watches
        self._deliver_blob = deliver_blob

    def handle(
        self, kind: str, method: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> Reply:
        """One delivery to webhook `kind` ("eventgrid" or "blobs"); the caller has checked the key."""
        wanted = "eventGridTrigger" if kind == "eventgrid" else "blobTrigger"
        name = next(iter(query.get("functionName", [])), "")
        if kind == "blobs":
            name = name.removeprefix("Host.Functions.")
        function = self._functions.get(name)
        if function is None or function.trigger_type != wanted:
            return Reply.error(404, "function_not_found", f"no {wanted} function named {name!r}")
        if method == "OPTIONS":  # CloudEvents webhook validation
            origin = headers.get("webhook-request-origin", "")
            return Reply(200, headers=[("WebHook-Allowed-Origin", origin or "*")])
        if method != "POST":
            return Reply.error(405, "method_not_allowed", "Event Grid deliveries are POSTs")
        event_kind = headers.get("aeg-event-type", "Notification")
        if event_kind == "SubscriptionDeletion":
            return Reply(202)
        try:
            document = json.loads(body)
        except ValueError:
            return Reply.error(400, "invalid_json", "the body is not JSON")
        events = document if isinstance(document, list) else [document]
        if not isinstance(document, list) and not (isinstance(document, dict) and "specversion" in document):
            return Reply.error(400, "invalid_events", "the body must be an array of events")
        if event_kind == "SubscriptionValidation" or any(
            isinstance(e, dict) and e.get("eventType") == SUBSCRIPTION_VALIDATION_EVENT for e in events
        ):
            return _validation_response(events)
        problem = next((p for p in map(event_problem, events) if p), None)
        if problem:
            return Reply.error(400, "invalid_events", problem)
        failures = 0
        for event in events:
            try:
                if kind == "eventgrid":
                    invoke_event(function, event)
                else:
                    self._deliver_blob_event(function, event)
            except Exception:
                failures += 1
                logger.exception("%s failed on event %s", function.name, event.get("id"))
        if failures:
            return Reply.error(500, "function_failed", f"{failures} of {len(events)} event(s) failed; retry")
        return Reply(200 if kind == "eventgrid" else 202)

    def _deliver_blob_event(self, function: HostedFunction, event: Mapping[str, Any]) -> None:
        """A BlobCreated event (either schema) for a blob of the trigger's container."""
        watch = next(w for w in self._watches if w.function is function)
        subject = str(event.get("subject", ""))
        match = re.fullmatch(r"/blobServices/default/containers/([^/]+)/blobs/(.+)", subject)
        if match is None or match.group(1) != watch.container or not watch.matches(match.group(2)):
            logger.info("%s: event %s is not for %s; skipped", function.name, event.get("id"), watch.container)
            return
        self._deliver_blob(function, watch.container, match.group(2))


def invoke_event(function: HostedFunction, event: Mapping[str, Any]) -> Any:
    """Call an Event Grid-triggered function with one event, decoded as the Functions worker decodes it."""
    return invoke(function, EventGridEventInConverter.decode(Datum(json.dumps(event), "json"), trigger_metadata=None))


def event_problem(event: Any) -> str | None:
    """Why an element of a delivery is not an event of its schema (CloudEvents when it has specversion)."""
    if not isinstance(event, dict):
        return "every event must be a JSON object"
    if "specversion" in event:
        missing = [key for key in ("id", "source", "type") if not event.get(key)]
    else:
        missing = [key for key in ("id", "eventType", "eventTime") if not event.get(key)]
        missing += [key for key in ("subject",) if not isinstance(event.get(key), str)]
    return f"event {event.get('id', '?')!s} lacks {', '.join(missing)}" if missing else None


def _validation_response(events: list[Any]) -> Reply:
    """The Event Grid subscription handshake: echo data.validationCode as validationResponse."""
    for event in events:
        data = event.get("data") if isinstance(event, dict) else None
        if isinstance(data, dict) and isinstance(data.get("validationCode"), str) and data["validationCode"]:
            return Reply.json(200, {"validationResponse": data["validationCode"]})
    return Reply.error(400, "invalid_events", "a SubscriptionValidation event carries data.validationCode")


def local_engine_webhook(configured: str | None, *, port: int, key: str) -> str | None:
    """The local engine's event webhook, pointed at this host (port and key) when it names a local host."""
    if not configured:
        return configured
    parts = urlsplit(configured)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.path != WEBHOOK_PATH:
        return configured
    query = [(k, v) for k, v in parse_qs(parts.query).items() if k != KEY_PARAMETER]
    pairs = [(k, v[0]) for k, v in query] + [(KEY_PARAMETER, key)]
    return urlunsplit(("http", f"127.0.0.1:{port}", parts.path, urlencode(pairs), ""))
