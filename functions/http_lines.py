"""HTTP API: model lines. Auth level FUNCTION (the app's default). Never returns a key."""

from __future__ import annotations

import azure.functions as func

from functions.http_responses import json_errors, json_response
from shared.context import get_context
from shared.usecases.lines import get_line, list_lines

bp = func.Blueprint()


@bp.function_name("list_lines")
@bp.route(route="lines", methods=["GET"])
@json_errors
def list_lines_handler(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"lines": [view.model_dump(mode="json") for view in list_lines(get_context())]})


@bp.function_name("get_line")
@bp.route(route="lines/{line}", methods=["GET"])
@json_errors
def get_line_handler(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(get_line(get_context(), req.route_params.get("line", "")).model_dump(mode="json"))
