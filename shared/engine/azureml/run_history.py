"""Why a job failed, as run history has it, read through azure-ai-ml's own run history client.

The job entity the SDK returns (`jobs.get`, ARM's `.../jobs/<name>`) carries no error: the recorded job bodies have
`status`, `services`, ... and nothing else about a failure. The error is on the run in run history: azure-ai-ml
1.35.2's `RunDetails.error` (`GET {history}/history/v1.0/.../workspaces/<ws>/runs/<id>/details`), the very field
`jobs.stream` prints when a job fails (azure/ai/ml/operations/_job_ops_helper.py, `_current_details.error`). Its
shape is the runhistory `ErrorResponse` model (azure/ai/ml/_restclient/runhistory/models/_models_py3.py):
`{"error": RootError, "correlation", "environment", "location", "time", "componentName"}`, RootError being
`{"code", "severity", "message", "messageFormat", "messageParameters", "referenceCode", "detailsUri", "target",
"details": [RootError], "innerError": {"code", "innerError"}, "additionalInfo"}`.

`JobOperations._runs_operations` (the SDK's RunOperations) and its `_operation` are private, so this module is the
one place that touches them; everything it returns is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChildRun:
    run_id: str
    display_name: str | None
    status: str


def run_details_body(workspace: Any, run_id: str) -> dict[str, Any]:
    """The run's details as the service sent them (camelCase), not as the SDK's model re-reads them."""
    runs = workspace.jobs._runs_operations
    body = runs._operation.get_details(
        runs._subscription_id,
        runs._resource_group_name,
        runs._workspace_name,
        run_id,
        cls=lambda pipeline_response, deserialized, headers: pipeline_response.http_response.json(),
    )
    return body if isinstance(body, dict) else {}


def child_runs(workspace: Any, run_id: str) -> list[ChildRun]:
    """The run's direct children in run history (a pipeline's nodes, a pipeline node's steps)."""
    runs = workspace.jobs._runs_operations
    children = runs._operation.get_child(runs._subscription_id, runs._resource_group_name, runs._workspace_name, run_id)
    return [
        ChildRun(run_id=str(child.run_id), display_name=child.display_name, status=str(child.status or ""))
        for child in children
        if child.run_id
    ]
