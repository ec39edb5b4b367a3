"""A failed pipeline job's cause, and whether a resubmission may succeed: read from run history's errors. Pure.

What the service says (run history's `ErrorResponse.error`, a RootError; shapes in run_history.py)
    - `code` is the root category. azure-ai-ml 1.35.2's runhistory RootError documents "ServiceError, UserError,
      ValidationError, AzureStorageError, TransientError, RequestThrottled"; runs failed by azureml's error
      definitions carry "UserError" or "SystemError" (`azureml._common._error_definition`: user_error.UserError,
      system_error.SystemError, and ClientError under SystemError), with the specific cause in the nested
      `innerError.code` chain. The fine-tuning components use them as is: azureml-acft-common-components
      `error_handling/error_definitions.py` has ACFTSystemError(SystemError), ACFTInternalError(ClientError),
      and InsufficientGPUMemory(Memory), ValidationError(UserError), InvalidDataset(NotSupported): user errors.
      A real answer as the SDK prints it: `{"error": {"code": "SystemError", "message": "Encountered an internal
      AutoML error...", "inner_error": {"code": "ClientError", "inner_error": {"code": "AutoMLInternal"}}}}`,
      and `{"code": "UserError", ..., "inner_error": {"code": "NotSupported", "inner_error": {"code":
      "IncompatibleOrMissingDependency"}}}` (a stored Azure ML AutoML notebook's outputs).
    - A preempted low-priority node is NOT a SystemError: the service reports it under UserError, with the cause
      named in the message: "UserError: AzureMLCompute job failed. PreemptionError: Nodes of this job got
      pre-empted. Check if the run has failed or restarted. Reason: Received pre-emption warning signal"
      (microsoft/MLOpsPython#346; the same message in Azure/MachineLearningNotebooks#1242 and
      MicrosoftDocs/azure-docs#66288). So "PreemptionError" in a message or an inner code counts as preemption.
    - A pipeline's own run fails because a step failed; its own error says little, so the failed steps (the failed
      runs below it without failed children of their own) are the causes, and the pipeline's error is read only
      when no failed step is found.

The rule: transient only when every cause is one the service explicitly calls a system, service or transient error,
or preemption. Anything else (UserError, ValidationError, a quota or storage error, no error, an unreadable one) is
the job's own: never resubmitted on a guess. Not verified without Azure: how a lost node (not preempted) is
worded, so it is transient only when it comes as a SystemError.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TRANSIENT_ROOT_CODES = frozenset({"systemerror", "serviceerror", "transienterror"})
PREEMPTION_MARKER = "preemptionerror"
MESSAGE_LIMIT = 400  # characters of a message kept in the cause (a step's message can hold a whole traceback)


@dataclass(frozen=True)
class FailedRun:
    """A failed run and its run-history details body (None: not read)."""

    name: str
    details: Mapping[str, Any] | None


@dataclass(frozen=True)
class JobFailure:
    cause: str | None  # "<step>: <code>: <message>", "; "-joined; None when the service gave no error
    transient: bool


def root_error(details: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The RootError of a run-history details body (`error.error`), or None when there is none or it is not one."""
    response = (details or {}).get("error")
    root = response.get("error") if isinstance(response, Mapping) else None
    return root if isinstance(root, Mapping) and isinstance(root.get("code"), str) else None


def _codes_and_messages(error: Mapping[str, Any], depth: int = 0) -> Iterator[str]:
    """The error's code and message, its inner codes and its details', lowercased (bounded depth)."""
    if depth > 8:
        return
    for key in ("code", "message"):
        if isinstance(error.get(key), str):
            yield error[key].lower()
    inner = error.get("innerError")
    if isinstance(inner, Mapping):
        yield from _codes_and_messages(inner, depth + 1)
    for detail in error.get("details") or ():
        if isinstance(detail, Mapping):
            yield from _codes_and_messages(detail, depth + 1)


def is_transient(error: Mapping[str, Any] | None) -> bool:
    if error is None:
        return False
    if str(error["code"]).lower() in TRANSIENT_ROOT_CODES:
        return True
    return any(PREEMPTION_MARKER in text for text in _codes_and_messages(error))


def describe(name: str, error: Mapping[str, Any] | None) -> str:
    if error is None:
        return f"{name}: no error recorded"
    message = " ".join(str(error.get("message") or "").split())
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    inner = error.get("innerError")
    inner_code = inner.get("code") if isinstance(inner, Mapping) else None
    code = f"{error['code']}/{inner_code}" if isinstance(inner_code, str) else str(error["code"])
    return f"{name}: {code}: {message}" if message else f"{name}: {code}"


def classify(job: FailedRun, failed_steps: Sequence[FailedRun]) -> JobFailure:
    """The failure of `job`, from its failed steps when it has any, else from its own error."""
    errors = [(run.name, root_error(run.details)) for run in failed_steps]
    if all(error is None for _, error in errors):  # no failed step, or none with an error: the job's own
        own = root_error(job.details)
        if own is None:
            return JobFailure(cause=None, transient=False)
        errors = [(job.name, own)]
    return JobFailure(
        cause="; ".join(describe(name, error) for name, error in errors),
        transient=all(is_transient(error) for _, error in errors),
    )
