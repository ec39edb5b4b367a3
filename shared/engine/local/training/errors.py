"""How a training job ends other than by completing: canceled (SIGTERM) or failed with a stable code."""

from __future__ import annotations


class JobCanceled(BaseException):
    """SIGTERM arrived: the job ends as canceled.

    A BaseException, like KeyboardInterrupt, so that no library's `except Exception` swallows it."""


class JobFailure(Exception):
    """The job cannot succeed; `code` is stable (it goes to status.json)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
