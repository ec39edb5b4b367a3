"""Who may see the dashboard. Its routes are anonymous at the Functions host (a browser cannot send a function key
on every click), so the app decides, three ways:

- `Authorization: Bearer <DASHBOARD_KEY>` (or `X-Dashboard-Key: <DASHBOARD_KEY>`): scripts and tests;
- a session cookie from `POST /api/ui/login` with that key (or from a one-time ticket the dev host prints): signed
  with a secret derived from the key, HttpOnly, SameSite=Strict and expiring;
- App Service Authentication's principal header, only when DASHBOARD_TRUST_EASY_AUTH is on: the platform strips
  the header from client requests when it authenticates them, and nowhere else, so it is never trusted by default.

Neither key nor cookie is ever written to a page, a link or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Literal
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

SESSION_COOKIE = "autopilot_session"
UI_PATH = "/api/ui"
EASY_AUTH_NAME_HEADER = "x-ms-client-principal-name"
KEY_HEADER = "x-dashboard-key"  # the key without the Authorization header
TICKET_SECONDS = 15 * 60  # how long a printed one-time ticket may wait to be used

Via = Literal["bearer", "cookie", "easy_auth"]


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and how they got in."""

    name: str
    via: Via

    @property
    def sends_ambient_credentials(self) -> bool:
        """A browser sends cookies (ours or Easy Auth's) by itself: such a viewer's changes must come from our pages."""
        return self.via != "bearer"


class DashboardAuth:
    """Checks a request's credentials and makes session cookies and one-time tickets. `clock` is for tests."""

    def __init__(
        self,
        key: str | None,
        *,
        trust_easy_auth: bool,
        session_hours: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._key = key
        self._trust_easy_auth = trust_easy_auth
        self.session_seconds = int(session_hours * 3600)
        secret = hashlib.sha256(b"ft-autopilot dashboard session\0" + key.encode()).digest() if key else None
        self._sessions = _serializer(secret, "session", clock) if secret else None
        self._tickets = _serializer(secret, "ticket", clock) if secret else None

    @property
    def configured(self) -> bool:
        """Whether anyone at all can get in (a key is set, or Easy Auth is trusted)."""
        return self._key is not None or self._trust_easy_auth

    def key_matches(self, offered: str) -> bool:
        return self._key is not None and hmac.compare_digest(offered.encode(), self._key.encode())

    def viewer(self, headers: Mapping[str, str]) -> Viewer | None:
        """The viewer a request's headers prove, or None. `headers` are looked up by lower-case name."""
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.key_matches(token.strip()):
            return Viewer("dashboard key", "bearer")
        # where App Service Authentication is on, it may answer a bearer token that is not its own JWT itself
        if self.key_matches(headers.get(KEY_HEADER, "").strip()):
            return Viewer("dashboard key", "bearer")
        session = self._session_of(headers.get("cookie", ""))
        if session is not None:
            return Viewer(session, "cookie")
        principal = headers.get(EASY_AUTH_NAME_HEADER, "").strip()
        if self._trust_easy_auth and principal:
            return Viewer(principal, "easy_auth")
        return None

    def session_cookie(self, *, secure: bool, who: str = "dashboard key") -> str:
        """A Set-Cookie value opening a session for `who`."""
        assert self._sessions is not None, "sessions need a DASHBOARD_KEY"
        token = self._sessions.dumps({"who": who, "sid": secrets.token_urlsafe(12)})
        return _cookie(token, max_age=self.session_seconds, secure=secure)

    @staticmethod
    def cleared_cookie(*, secure: bool) -> str:
        return _cookie("", max_age=0, secure=secure)

    def ticket(self) -> tuple[str, str]:
        """A one-time ticket for a login link, and its nonce (redeemed once: the caller records it)."""
        assert self._tickets is not None, "tickets need a DASHBOARD_KEY"
        nonce = secrets.token_hex(16)
        return self._tickets.dumps({"nonce": nonce}), nonce

    def ticket_nonce(self, ticket: str) -> str | None:
        """The nonce of a genuine, unexpired ticket; None otherwise."""
        if self._tickets is None:
            return None
        try:
            payload = self._tickets.loads(ticket, max_age=TICKET_SECONDS)
        except (BadSignature, SignatureExpired):
            return None
        nonce = payload.get("nonce") if isinstance(payload, dict) else None
        return nonce if isinstance(nonce, str) and nonce.isalnum() else None

    def _session_of(self, cookie_header: str) -> str | None:
        if self._sessions is None or not cookie_header:
            return None
        cookies = SimpleCookie()
        try:
            cookies.load(cookie_header)
        except Exception:  # http.cookies raises CookieError and others on malformed headers
            return None
        morsel = cookies.get(SESSION_COOKIE)
        if morsel is None or not morsel.value:
            return None
        try:
            payload = self._sessions.loads(morsel.value, max_age=self.session_seconds)
        except (BadSignature, SignatureExpired):
            return None
        who = payload.get("who") if isinstance(payload, dict) else None
        return who if isinstance(who, str) else None


def same_origin(headers: Mapping[str, str], host: str) -> bool:
    """Whether a state-changing request comes from our own pages: its Origin (or, without one, its Referer) names
    this host. Browsers send Origin on every form POST; SameSite=Strict already keeps our cookie off other sites'."""
    source = headers.get("origin") or headers.get("referer") or ""
    return bool(host) and urlsplit(source).netloc.lower() == host.lower()


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard path only (never another site, never `//host`)."""
    if not target or not (target == UI_PATH or target.startswith((f"{UI_PATH}/", f"{UI_PATH}?"))):
        return UI_PATH
    if "\\" in target or "/../" in target or target.endswith("/..") or any(ord(c) < 0x20 for c in target):
        return UI_PATH
    return target


def _serializer(secret: bytes, salt: str, clock: Callable[[], float] | None) -> URLSafeTimedSerializer:
    signer: type[TimestampSigner] = TimestampSigner
    if clock is not None:
        now = clock

        class _ClockedSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(now())

        signer = _ClockedSigner
    return URLSafeTimedSerializer(secret, salt=f"ft-autopilot/{salt}", signer=signer)


def _cookie(value: str, *, max_age: int, secure: bool) -> str:
    attributes = [f"{SESSION_COOKIE}={value}", f"Path={UI_PATH}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    return "; ".join(attributes + (["Secure"] if secure else []))
