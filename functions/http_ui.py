"""The dashboard under /api/ui: server-rendered pages, and the API's own actions behind a confirmation.

ANONYMOUS at the host; the app authenticates every route but the login page and the static assets
(functions/http_pages.py). Never shows, links or logs a key.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from functions.http_pages import (
    dashboard_auth,
    dashboard_page,
    error_page,
    form_of,
    headers_of,
    is_secure,
    page,
    redirect,
)
from shared.api.http import CreateRunRequest
from shared.context import get_context
from shared.domain.errors import InvalidInput
from shared.ui.auth import UI_PATH, Viewer, safe_next
from shared.ui.render import asset
from shared.usecases.dashboard import (
    endpoints_page,
    line_page,
    overview_page,
    redeem_login_ticket,
    restorable_endpoint,
    run_page,
)
from shared.usecases.intake import create_run, refused_repeat
from shared.usecases.lifecycle.jobs import cancel_run
from shared.usecases.lifecycle.restore import restore_endpoint
from shared.usecases.lines import list_lines
from shared.usecases.queries import get_run
from shared.usecases.submission import IntakeStatus

logger = logging.getLogger(__name__)
ANONYMOUS = func.AuthLevel.ANONYMOUS

bp = func.Blueprint()


@bp.function_name("ui_overview")
@bp.route(route="ui", methods=["GET"], auth_level=ANONYMOUS)
@dashboard_page
def ui_overview(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    return page(req, viewer, "overview.html", page=overview_page(get_context()), section="overview")


@bp.function_name("ui_lines")
@bp.route(route="ui/lines", methods=["GET"], auth_level=ANONYMOUS)
@dashboard_page
def ui_lines(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    return page(req, viewer, "lines.html", lines=list_lines(get_context()), section="lines")


@bp.function_name("ui_line")
@bp.route(route="ui/lines/{line}", methods=["GET"], auth_level=ANONYMOUS)
@dashboard_page
def ui_line(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    line = req.route_params.get("line", "")
    return page(req, viewer, "line.html", page=line_page(get_context(), line), section="lines")


@bp.function_name("ui_run")
@bp.route(route="ui/runs/{run_id}", methods=["GET"], auth_level=ANONYMOUS)
@dashboard_page
def ui_run(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    run_id = req.route_params.get("run_id", "")
    return page(req, viewer, "run.html", page=run_page(get_context(), run_id), section="runs")


@bp.function_name("ui_endpoints")
@bp.route(route="ui/endpoints", methods=["GET"], auth_level=ANONYMOUS)
@dashboard_page
def ui_endpoints(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    return page(req, viewer, "endpoints.html", page=endpoints_page(get_context()), section="endpoints")


@bp.function_name("ui_confirm")
@bp.route(route="ui/confirm", methods=["GET"], auth_level=ANONYMOUS)
@dashboard_page
def ui_confirm(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    """The confirmation every action goes through: a page that names what will happen, and a form to do it."""
    action = req.params.get("action", "")
    ctx = get_context()
    if action == "restore":
        endpoint = restorable_endpoint(ctx, req.params.get("endpoint", ""))
        return _confirmation(
            req,
            viewer,
            question=f"Restore endpoint {endpoint.name}?",
            verb="Restore",
            detail=f"Line {endpoint.line}'s champion {endpoint.model} is deployed again, smoke-tested and given all "
            "traffic. It bills from then on.",
            action=f"{UI_PATH}/endpoints/{endpoint.name}/restore",
            fields={},
            back=f"{UI_PATH}/endpoints",
        )
    if action == "cancel":
        record = get_run(ctx, req.params.get("run_id", ""))
        return _confirmation(
            req,
            viewer,
            question=f"Cancel run {record.run_id}?",
            verb="Cancel the run",
            danger=True,
            detail=f"Its job is canceled (it is {record.state} now); a canceled run does not resume.",
            action=f"{UI_PATH}/runs/{record.run_id}/cancel",
            fields={},
            back=f"{UI_PATH}/runs/{record.run_id}",
        )
    if action == "create_run":
        request = _run_request(req.params.get("dataset", ""), req.params.get("force", ""))
        line = req.params.get("line", "")
        again = " as a new run, even if it ran before" if request.force else ""
        return _confirmation(
            req,
            viewer,
            question=f"Start a run on {request.dataset}?",
            verb="Start the run",
            detail=f"The upload is validated, estimated and submitted{again}, with its line's configuration.",
            action=f"{UI_PATH}/runs",
            fields={"dataset": request.dataset or "", "force": str(request.force).lower()},
            back=f"{UI_PATH}/lines/{line}" if line else UI_PATH,
        )
    raise InvalidInput(f"unknown action {action!r}: restore, cancel or create_run")


@bp.function_name("ui_restore_endpoint")
@bp.route(route="ui/endpoints/{name}/restore", methods=["POST"], auth_level=ANONYMOUS)
@dashboard_page
def ui_restore_endpoint(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    name = req.route_params.get("name", "")
    record = restore_endpoint(get_context(), name)  # checks the name
    logger.info("dashboard (%s) restored endpoint %s", viewer.via, name, extra={"run_id": record.run_id})
    return redirect(f"{UI_PATH}/runs/{record.run_id}?notice=restored")


@bp.function_name("ui_cancel_run")
@bp.route(route="ui/runs/{run_id}/cancel", methods=["POST"], auth_level=ANONYMOUS)
@dashboard_page
def ui_cancel_run(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    run_id = req.route_params.get("run_id", "")
    record = cancel_run(get_context(), run_id)  # checks the id
    logger.info("dashboard (%s) canceled run %s", viewer.via, record.run_id, extra={"run_id": record.run_id})
    return redirect(f"{UI_PATH}/runs/{run_id}?notice=cancel_requested")


@bp.function_name("ui_create_run")
@bp.route(route="ui/runs", methods=["POST"], auth_level=ANONYMOUS)
@dashboard_page
def ui_create_run(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    form = form_of(req)
    request = _run_request(form.get("dataset", ""), form.get("force", ""))
    outcome, record = create_run(get_context(), request)
    if (refusal := refused_repeat(outcome, record)) is not None:
        return error_page(req, viewer, 409, "run_exists", refusal)
    notice = "known" if outcome.status == IntakeStatus.DUPLICATE else "started"
    return redirect(f"{UI_PATH}/runs/{record.run_id}?notice={notice}")


@bp.function_name("ui_login")
@bp.route(route="ui/login", methods=["GET", "POST"], auth_level=ANONYMOUS)
def ui_login(req: func.HttpRequest) -> func.HttpResponse:
    """The sign-in page; a POST of the key, or a one-time ticket in the link, opens a session (a signed cookie)."""
    ctx = get_context()
    auth = dashboard_auth(ctx.settings)
    secure = is_secure(req)
    if req.method == "POST":
        form = form_of(req)
        target = safe_next(form.get("next"))
        if auth.key_matches(form.get("key", "")):
            return redirect(target, cookie=auth.session_cookie(secure=secure))
        logger.warning("dashboard sign-in refused: wrong key")
        return _login_page(req, auth.configured, target, failed="That is not the dashboard key.", status_code=401)
    target = safe_next(req.params.get("next"))
    ticket = req.params.get("ticket")
    if ticket is not None:
        nonce = auth.ticket_nonce(ticket)
        if nonce is not None and redeem_login_ticket(ctx, nonce):
            return redirect(target, cookie=auth.session_cookie(secure=secure, who="one-time link"))
        logger.warning("dashboard sign-in refused: a used, expired or forged one-time link")
        return _login_page(
            req, auth.configured, target, failed="That sign-in link was used already, or has expired.", status_code=401
        )
    if auth.viewer(headers_of(req)) is not None:
        return redirect(target)
    return _login_page(req, auth.configured, target)


@bp.function_name("ui_logout")
@bp.route(route="ui/logout", methods=["POST"], auth_level=ANONYMOUS)
@dashboard_page
def ui_logout(req: func.HttpRequest, viewer: Viewer) -> func.HttpResponse:
    return redirect(
        f"{UI_PATH}/login", cookie=dashboard_auth(get_context().settings).cleared_cookie(secure=is_secure(req))
    )


@bp.function_name("ui_asset")
@bp.route(route="ui/assets/{name}", methods=["GET"], auth_level=ANONYMOUS)
def ui_asset(req: func.HttpRequest) -> func.HttpResponse:
    """The stylesheet and htmx: the pages load nothing from another origin."""
    found = asset(req.route_params.get("name", ""))
    if found is None:
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain")
    body, content_type = found
    return func.HttpResponse(
        body,
        status_code=200,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "public, max-age=3600",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _login_page(
    req: func.HttpRequest, configured: bool, target: str, *, failed: str | None = None, status_code: int = 200
) -> func.HttpResponse:
    return page(
        req,
        None,
        "login.html",
        status_code=status_code if configured else 503,
        configured=configured,
        next=target,
        failed=failed,
        section=None,
    )


def _confirmation(req: func.HttpRequest, viewer: Viewer, *, danger: bool = False, **context: Any) -> func.HttpResponse:
    return page(req, viewer, "confirm.html", danger=danger, section=None, **context)


def _run_request(dataset: str, force: str) -> CreateRunRequest:
    try:
        return CreateRunRequest(dataset=dataset, force=force.lower() in ("true", "on", "1"))
    except ValueError as exc:
        raise InvalidInput(f"dataset: {exc}") from exc
