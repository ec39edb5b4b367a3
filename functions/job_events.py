"""Event Grid trigger: Azure ML job events (and the local engine's, which have the same shape)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.api.events import parse_job_event
from shared.context import get_context
from shared.domain.errors import InvalidInput
from shared.usecases.lifecycle.jobs import handle_job_event

logger = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("on_job_event")
@bp.event_grid_trigger(arg_name="event")
def on_job_event(event: func.EventGridEvent) -> None:
    # The library hands over an EventGridEvent, or a CloudEvent (type/source) for CloudEvents subscriptions.
    try:
        job_event = parse_job_event(
            event_id=event.id,
            event_type=getattr(event, "event_type", None) or getattr(event, "type", None),
            topic=getattr(event, "topic", None) or getattr(event, "source", None),
            subject=event.subject,
            data=event.get_json(),
        )
    except InvalidInput as exc:
        logger.warning("on_job_event %s dropped: %s", event.id, exc.message)  # redelivery cannot fix bad input
        return
    outcome = handle_job_event(get_context(), job_event)
    logger.info(
        "on_job_event %s (%s %s): %s",
        event.id,
        job_event.job_name,
        job_event.raw_status,
        outcome,
        extra={"run_id": job_event.app_run_id},
    )
