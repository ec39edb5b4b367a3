"""Typed Azure ML run events (Event Grid schema or CloudEvents), parsed and filtered. Pure.

Only whole pipeline jobs of this app's workspace that carry this app's run tag are ours; everything else is
ignored with a reason. Statuses are compared case-insensitively (both "Completed" and "failed" occur).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.domain.errors import InvalidInput
from shared.domain.jobs import JobStatus, from_azure
from shared.domain.tags import RUN_TAG

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
PIPELINE_RUN = "azureml.PipelineRun"


class RunEventData(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    experiment_id: str | None = Field(None, alias="experimentId")
    experiment_name: str | None = Field(None, alias="experimentName")
    run_id: str = Field(alias="runId")
    run_type: str | None = Field(None, alias="runType")
    run_tags: dict[str, Any] = Field(default_factory=dict, alias="runTags")
    run_properties: dict[str, Any] = Field(default_factory=dict, alias="runProperties")
    run_status: str | None = Field(None, alias="runStatus")


@dataclass(frozen=True)
class JobEvent:
    event_id: str
    event_type: str
    topic: str | None
    subject: str | None
    job_name: str
    run_type: str | None
    app_run_id: str | None  # the app's run id from the job's tags; None: not this app's job
    status: JobStatus | None  # None: a status word we do not know
    raw_status: str | None


def parse_job_event(
    *, event_id: str, event_type: str | None, topic: str | None, subject: str | None, data: Any
) -> JobEvent:
    """From the fields both event schemas carry (CloudEvents: type, source, subject, data)."""
    if not isinstance(data, dict):
        raise InvalidInput(f"event {event_id}: data is not an object")
    try:
        parsed = RunEventData.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"event {event_id}: not an Azure ML run event ({exc.errors()[0]['msg']})") from exc
    raw_status = parsed.run_status
    if raw_status is None and event_type == RUN_COMPLETED:
        raw_status = "Completed"
    tag = parsed.run_tags.get(RUN_TAG)
    return JobEvent(
        event_id=event_id,
        event_type=event_type or "",
        topic=topic,
        subject=subject,
        job_name=parsed.run_id,
        run_type=parsed.run_type,
        app_run_id=str(tag) if tag else None,
        status=from_azure(raw_status),
        raw_status=raw_status,
    )


def ignore_reason(event: JobEvent, workspace_topic: str | None) -> str | None:
    """Why this event is not ours to act on, or None when it is."""
    if event.event_type not in (RUN_COMPLETED, RUN_STATUS_CHANGED):
        return f"event type {event.event_type!r} is not a run event"
    if workspace_topic and (event.topic or "").lower() != workspace_topic.lower():
        return f"from another workspace ({event.topic})"
    if event.run_type != PIPELINE_RUN:
        return f"run type {event.run_type!r} is a step, not a pipeline job"
    if event.app_run_id is None:
        return f"job {event.job_name} does not carry the {RUN_TAG} tag"
    if event.status is None:
        return f"unknown run status {event.raw_status!r}"
    return None
