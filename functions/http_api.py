"""HTTP API: dataset validation and run status. Auth level FUNCTION (the app's default)."""

from __future__ import annotations

import azure.functions as func

from functions.http_responses import json_errors, json_response
from shared.context import get_context
from shared.errors import InvalidInput, PayloadTooLarge
from shared.services import get_run, list_runs, validate_bytes
from shared.settings import get_settings

bp = func.Blueprint()


@bp.function_name("validate_dataset")
@bp.route(route="validate", methods=["POST"])
@json_errors
def validate_dataset(req: func.HttpRequest) -> func.HttpResponse:
    settings = get_settings()
    body = req.get_body()
    if len(body) > settings.max_request_bytes:
        raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {settings.max_request_bytes}")
    report = validate_bytes(settings, body, test_fraction=_optional_float(req, "test_fraction"))
    return json_response(report.model_dump(mode="json"), 200 if report.valid else 422)


@bp.function_name("get_run")
@bp.route(route="runs/{run_id}", methods=["GET"])
@json_errors
def get_run_handler(req: func.HttpRequest) -> func.HttpResponse:
    record = get_run(get_context(), req.route_params.get("run_id", ""))
    return json_response(record.model_dump(mode="json", by_alias=True))


@bp.function_name("list_runs")
@bp.route(route="runs", methods=["GET"])
@json_errors
def list_runs_handler(req: func.HttpRequest) -> func.HttpResponse:
    limit = _optional_int(req, "limit")
    records = list_runs(get_context(), state=req.params.get("state"), limit=100 if limit is None else limit)
    return json_response({"runs": [record.model_dump(mode="json", by_alias=True) for record in records]})


def _optional_float(req: func.HttpRequest, name: str) -> float | None:
    raw = req.params.get(name)
    try:
        return None if raw is None else float(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a number, got {raw!r}") from exc


def _optional_int(req: func.HttpRequest, name: str) -> int | None:
    raw = req.params.get(name)
    try:
        return None if raw is None else int(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be an integer, got {raw!r}") from exc
