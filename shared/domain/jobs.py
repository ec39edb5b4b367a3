"""Job statuses, for every engine, and Azure ML's words for them in both directions: the one table the event
parser, the Azure ML adapter and the local engine's Azure-shaped events all read."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


# Azure ML's status words (job entities and run events), lowercased, without spaces. "Starting" comes before
# provisioning and queuing, so nothing runs yet; NotResponding is a missed heartbeat (the job may recover), and
# Paused a job that will go on: both still run.
FROM_AZURE: dict[str, JobStatus] = {
    "notstarted": JobStatus.QUEUED,
    "starting": JobStatus.QUEUED,
    "provisioning": JobStatus.QUEUED,
    "preparing": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "finalizing": JobStatus.RUNNING,
    "cancelrequested": JobStatus.RUNNING,
    "notresponding": JobStatus.RUNNING,
    "paused": JobStatus.RUNNING,
    "completed": JobStatus.COMPLETED,
    "finished": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.CANCELED,
    "cancelled": JobStatus.CANCELED,
}

# How Azure ML spells each status, for events made in its shape (the local engine's).
TO_AZURE: dict[JobStatus, str] = {
    JobStatus.QUEUED: "Queued",
    JobStatus.RUNNING: "Running",
    JobStatus.COMPLETED: "Completed",
    JobStatus.FAILED: "Failed",
    JobStatus.CANCELED: "Canceled",
}


def from_azure(word: str | None) -> JobStatus | None:
    """The status an Azure ML word means, compared case- and space-insensitively; None for a word not known."""
    return FROM_AZURE.get((word or "").replace(" ", "").lower())
