"""`POST /admin/functions/<fn>` `{"input": ...}`: runs a non-HTTP function by hand (Core Tools' admin API)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

from azure.storage.blob import BlobServiceClient

from shared.devhost.blobs import BlobDelivery, BlobWatch
from shared.devhost.eventgrid import event_problem, invoke_event
from shared.devhost.indexing import HostedFunction
from shared.devhost.replies import Reply
from shared.devhost.timers import invoke_timer

logger = logging.getLogger(__name__)

FUNCTIONS_PATH = "/admin/functions/"


class AdminApi:
    def __init__(
        self,
        functions: Mapping[str, HostedFunction],
        watches: Sequence[BlobWatch],
        *,
        service: BlobServiceClient,
        deliver_blob: BlobDelivery,
    ) -> None:
        self._functions = functions
        self._watches = watches
        self._service = service
        self._deliver_blob = deliver_blob

    def run(self, name: str, body: bytes) -> Reply:
        """Run function `name` with the body's input (a blob name, an event, nothing for a timer): 202 when it ran."""
        function = self._functions.get(name)
        if function is None:
            return Reply.error(404, "function_not_found", f"no function named {name!r}")
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError:
            return Reply.error(400, "invalid_json", 'the body is not JSON; send {"input": ...}')
        supplied = document.get("input") if isinstance(document, dict) else None
        try:
            if function.trigger_type == "timerTrigger":
                invoke_timer(function, past_due=False)
            elif function.trigger_type == "blobTrigger":
                watch = next(w for w in self._watches if w.function is function)
                if not isinstance(supplied, str) or not supplied:
                    return Reply.error(400, "invalid_input", f"input is the name of a blob in {watch.container}")
                if not self._service.get_blob_client(watch.container, supplied).exists():
                    return Reply.error(404, "blob_not_found", f"no blob {supplied!r} in {watch.container}")
                self._deliver_blob(function, watch.container, supplied)
            elif function.trigger_type == "eventGridTrigger":
                event = json.loads(supplied) if isinstance(supplied, str) else supplied
                if not isinstance(event, dict):
                    return Reply.error(400, "invalid_input", "input is one event object")
                problem = event_problem(event)
                if problem:
                    return Reply.error(400, "invalid_input", problem)
                invoke_event(function, event)
            else:
                return Reply.error(400, "not_invocable", f"{name} is {function.trigger_type}; call its route")
        except Exception:
            logger.exception("%s failed (admin invocation)", name)
            return Reply.error(500, "function_failed", f"{name} raised; see the host log")
        return Reply(202)
