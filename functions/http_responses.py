"""JSON responses and the error shape of DESIGN.md: {"error": {"code": str, "message": str}}."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
import orjson

from shared.domain.errors import AutopilotError

logger = logging.getLogger(__name__)


def json_response(body: Any, status_code: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        orjson.dumps(body, option=orjson.OPT_INDENT_2), status_code=status_code, mimetype="application/json"
    )


def error_response(status_code: int, code: str, message: str) -> func.HttpResponse:
    return json_response({"error": {"code": code, "message": message}}, status_code)


def json_errors(handler: Callable[[func.HttpRequest], func.HttpResponse]) -> Callable[..., func.HttpResponse]:
    """Map the app's errors to their status and code; anything unexpected is a logged 500 that leaks nothing."""

    @wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except AutopilotError as exc:
            logger.info("%s %s -> %s %s", req.method, _path(req), exc.http_status, exc.code)
            return error_response(exc.http_status, exc.code, exc.message)
        except Exception:
            logger.exception("%s %s failed", req.method, _path(req))
            return error_response(500, "internal_error", "unexpected error; see the function logs")

    return wrapper


def _path(req: func.HttpRequest) -> str:
    """The URL without its query: in Azure the query may carry the function key (?code=)."""
    return urlsplit(req.url).path
