"""Error hierarchy with stable codes.

Invalid input is reported and dropped; a transient failure is raised so the platform retries
(`transient=True`); anything else is recorded on the run and not retried.
"""

from __future__ import annotations


class AutopilotError(Exception):
    """Base of every error the app raises on purpose. `code` is stable and safe to show to users."""

    code = "internal_error"
    http_status = 500
    transient = False

    def __init__(self, message: str, *, code: str | None = None, transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if transient is not None:
            self.transient = transient

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidInput(AutopilotError):
    code = "invalid_input"
    http_status = 400


class PayloadTooLarge(AutopilotError):
    code = "payload_too_large"
    http_status = 413


class NotFound(AutopilotError):
    code = "not_found"
    http_status = 404


class RunNotFound(NotFound):
    code = "run_not_found"


class RecordUnreadable(AutopilotError):
    """A stored record (a run, a receipt) is there but does not parse: damaged, or written by something else.
    Not retried: `autopilot runs repair` shows it and restores the kept copy."""

    code = "run_record_unreadable"
    http_status = 500


class InvalidTransition(AutopilotError):
    """A run was asked to move to a state its current state does not lead to."""

    code = "invalid_transition"
    http_status = 409


class ConcurrentUpdate(AutopilotError):
    """An optimistic-concurrency write kept losing to other writers."""

    code = "concurrent_update"
    http_status = 409
    transient = True


class StorageUnavailable(AutopilotError):
    code = "storage_unavailable"
    http_status = 503
    transient = True


class EngineError(AutopilotError):
    """A failure reported by the training/serving engine. Transient unless a subclass says otherwise."""

    code = "engine_error"
    http_status = 502
    transient = True


class EngineNotConfigured(EngineError):
    """No engine can run jobs with the current settings. Permanent: retrying does not help."""

    code = "engine_not_configured"
    http_status = 503
    transient = False


def describe_validation_error(exc: ValueError, what: str) -> str:
    """A pydantic ValidationError as one line: `field: problem; field: problem`."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}" for e in errors())
