"""The dashboard's edge: who is asking (shared.ui.auth), HTML responses with safe headers, and errors as pages.

Its routes are ANONYMOUS at the host: every handler is wrapped in `dashboard_page`, which answers an unknown
visitor with a redirect to the login page (a browser) or a 401 (anything else), and shows no data either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import lru_cache, wraps
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import azure.functions as func

from functions.http_responses import error_response
from shared.context import get_context
from shared.domain.errors import AutopilotError, PayloadTooLarge
from shared.settings import Settings
from shared.ui.auth import UI_PATH, DashboardAuth, Viewer, same_origin
from shared.ui.render import render
from shared.usecases.costs import prices

logger = logging.getLogger(__name__)

MAX_FORM_BYTES = 16 * 1024
UNRESOLVED_KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
NOTICES = {  # ?notice= codes our own redirects add; any other value shows nothing
    "restored": "The endpoint was restored from its champion, smoke-tested and given all traffic.",
    "cancel_requested": "Cancellation was requested; the run moves to canceled when the engine confirms it.",
    "started": "The run was started.",
    "known": "This content already ran with these parameters: this is its run.",
}

Page = Callable[[func.HttpRequest, Viewer], func.HttpResponse]


def dashboard_auth(settings: Settings) -> DashboardAuth:
    key = settings.dashboard_key.get_secret_value() if settings.dashboard_key else None
    return _auth(key, settings.dashboard_trust_easy_auth, settings.dashboard_session_hours)


@lru_cache(maxsize=4)
def _auth(key: str | None, trust_easy_auth: bool, session_hours: float) -> DashboardAuth:
    if key is not None and key.startswith(UNRESOLVED_KEY_VAULT_REFERENCE):
        # App Service leaves a reference it cannot resolve as its text: that text is no secret
        logger.error("DASHBOARD_KEY is an unresolved Key Vault reference: the key is not accepted")
        key = None
    return DashboardAuth(key, trust_easy_auth=trust_easy_auth, session_hours=session_hours)


def headers_of(req: func.HttpRequest) -> dict[str, str]:
    return {name.lower(): value for name, value in req.headers.items()}


def is_secure(req: func.HttpRequest) -> bool:
    forwarded = headers_of(req).get("x-forwarded-proto", "")
    return urlsplit(req.url).scheme == "https" or forwarded.lower() == "https"


def dashboard_page(handler: Page) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Authenticate, refuse cross-site changes, and show the app's errors as pages; log the path, never the query."""

    @wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        path = urlsplit(req.url).path
        try:
            auth = dashboard_auth(get_context().settings)
            headers = headers_of(req)
            viewer = auth.viewer(headers)
            if viewer is None:
                return unauthenticated(req)
            cross_site = not same_origin(headers, urlsplit(req.url).netloc)
            if req.method != "GET" and viewer.sends_ambient_credentials and cross_site:
                logger.warning("%s %s refused: not from the dashboard's own pages", req.method, path)
                return error_page(req, viewer, 403, "cross_site_request", "This change must come from the dashboard.")
            return handler(req, viewer)
        except AutopilotError as exc:
            logger.info("%s %s -> %s %s", req.method, path, exc.http_status, exc.code)
            return error_page(req, None, exc.http_status, exc.code, exc.message)
        except Exception:
            logger.exception("%s %s failed", req.method, path)
            return error_page(req, None, 500, "internal_error", "Unexpected error; see the function logs.")

    return wrapper


def unauthenticated(req: func.HttpRequest) -> func.HttpResponse:
    """A browser asking for a page goes to the login page; anything else gets a 401. No data either way."""
    accepts_html = "text/html" in headers_of(req).get("accept", "")
    if req.method == "GET" and accepts_html:
        target = urlsplit(req.url)
        back = target.path + (f"?{target.query}" if target.query else "")
        return redirect(f"{UI_PATH}/login?next={quote(back, safe='/')}")
    response = error_response(401, "unauthorized", "the dashboard needs its key (Authorization: Bearer) or a session")
    response.headers["WWW-Authenticate"] = 'Bearer realm="ft-autopilot dashboard"'
    return response


def html(body: str, status_code: int = 200, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        body,
        status_code=status_code,
        mimetype="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def redirect(location: str, *, cookie: str | None = None) -> func.HttpResponse:
    """A 303 to one of our own paths (after a form POST, the browser then GETs it)."""
    headers = {**SECURITY_HEADERS, "Location": location}
    if cookie is not None:
        headers["Set-Cookie"] = cookie
    return func.HttpResponse(status_code=303, headers=headers)


def page(
    req: func.HttpRequest, viewer: Viewer | None, template: str, *, status_code: int = 200, **context: Any
) -> func.HttpResponse:
    settings = get_context().settings
    notice = NOTICES.get(req.params.get("notice", ""))
    body = render(
        template,
        viewer=viewer,
        prices=prices(settings),
        standalone=False,
        now=get_context().now(),
        notice=notice,
        **context,
    )
    return html(body, status_code)


def error_page(
    req: func.HttpRequest, viewer: Viewer | None, status_code: int, code: str, message: str
) -> func.HttpResponse:
    heading = {400: "Not possible", 403: "Refused", 404: "Not found", 409: "Not now", 422: "Refused"}.get(
        status_code, "Something went wrong"
    )
    try:
        return page(
            req,
            viewer,
            "error.html",
            status_code=status_code,
            heading=heading,
            code=code,
            message=message,
            back=None,
            section=None,
        )
    except Exception:  # the page itself failed (e.g. storage is down): the JSON error still says what happened
        logger.exception("the error page failed")
        return error_response(status_code, code, message)


def form_of(req: func.HttpRequest) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (first value of each field)."""
    body = req.get_body() or b""
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"the form is {len(body)} bytes; the limit is {MAX_FORM_BYTES}")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}
