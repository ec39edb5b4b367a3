"""HTTP API: runs, validation and endpoints. Auth level FUNCTION (the app's default). Never returns a key."""

from __future__ import annotations

from dataclasses import asdict
from typing import TypeVar

import azure.functions as func
from pydantic import BaseModel, ValidationError

from functions.http_responses import json_errors, json_response
from shared.api.http import CreateRunRequest
from shared.context import get_context
from shared.domain.errors import InvalidInput, PayloadTooLarge, describe_validation_error
from shared.settings import get_settings
from shared.usecases.intake import create_run, refused_repeat
from shared.usecases.lifecycle.jobs import cancel_run
from shared.usecases.lifecycle.restore import restore_endpoint
from shared.usecases.queries import get_run, list_endpoints, list_runs
from shared.usecases.submission import IntakeStatus
from shared.usecases.validation import validate_bytes

MAX_JSON_BODY_BYTES = 64 * 1024
BodyT = TypeVar("BodyT", bound=BaseModel)

bp = func.Blueprint()


@bp.function_name("validate_dataset")
@bp.route(route="validate", methods=["POST"])
@json_errors
def validate_dataset(req: func.HttpRequest) -> func.HttpResponse:
    settings = get_settings()  # validation needs no storage: settings alone
    body = req.get_body()
    if len(body) > settings.max_request_bytes:
        raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {settings.max_request_bytes}")
    report = validate_bytes(settings, body, test_fraction=_optional_float(req, "test_fraction"))
    return json_response(report.model_dump(mode="json"), 200 if report.valid else 422)


@bp.function_name("create_run")
@bp.route(route="runs", methods=["POST"])
@json_errors
def create_run_handler(req: func.HttpRequest) -> func.HttpResponse:
    request = _json_body(req, CreateRunRequest)
    outcome, record = create_run(get_context(), request)
    if (refusal := refused_repeat(outcome, record)) is not None:
        return json_response({"error": {"code": "run_exists", "message": refusal}, "run": _run_json(record)}, 409)
    status = 422 if outcome.status == IntakeStatus.REJECTED else 202
    return json_response(_run_json(record), status)


@bp.function_name("get_run")
@bp.route(route="runs/{run_id}", methods=["GET"])
@json_errors
def get_run_handler(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(_run_json(get_run(get_context(), req.route_params.get("run_id", ""))))


@bp.function_name("list_runs")
@bp.route(route="runs", methods=["GET"])
@json_errors
def list_runs_handler(req: func.HttpRequest) -> func.HttpResponse:
    limit = _optional_int(req, "limit")
    listing = list_runs(
        get_context(),
        state=req.params.get("state"),
        line=req.params.get("line"),
        limit=100 if limit is None else limit,
    )
    return json_response(
        {
            "runs": [_run_json(record) for record in listing.records],
            "unreadable": [asdict(damaged) for damaged in listing.unreadable],
        }
    )


@bp.function_name("cancel_run")
@bp.route(route="runs/{run_id}/cancel", methods=["POST"])
@json_errors
def cancel_run_handler(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(_run_json(cancel_run(get_context(), req.route_params.get("run_id", ""))), 202)


@bp.function_name("list_endpoints")
@bp.route(route="endpoints", methods=["GET"])
@json_errors
def list_endpoints_handler(req: func.HttpRequest) -> func.HttpResponse:
    views = [view.model_dump(mode="json") for view in list_endpoints(get_context())]
    return json_response({"endpoints": views})


@bp.function_name("restore_endpoint")
@bp.route(route="endpoints/{name}/restore", methods=["POST"])
@json_errors
def restore_endpoint_handler(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(_run_json(restore_endpoint(get_context(), req.route_params.get("name", ""))), 202)


def _run_json(record) -> dict:
    return record.model_dump(mode="json", by_alias=True)


def _json_body(req: func.HttpRequest, model: type[BodyT]) -> BodyT:
    body = req.get_body()
    if len(body) > MAX_JSON_BODY_BYTES:
        raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {MAX_JSON_BODY_BYTES}")
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise InvalidInput(f"invalid request body: {describe_validation_error(exc, 'body')}") from exc


def _optional_float(req: func.HttpRequest, name: str) -> float | None:
    return _optional_number(req, name, float, "a number")


def _optional_int(req: func.HttpRequest, name: str) -> int | None:
    return _optional_number(req, name, int, "an integer")


def _optional_number(req: func.HttpRequest, name: str, kind: type, described: str):
    raw = req.params.get(name)
    try:
        return None if raw is None else kind(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be {described}, got {raw!r}") from exc
