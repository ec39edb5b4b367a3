"""Who may see the dashboard (shared/ui/auth.py): the key as a bearer token, the signed session cookie, Easy Auth's
principal header, one-time tickets, and the checks on where a state change comes from and where sign-in goes next.

Time is a mutable clock handed to DashboardAuth, so expiry is tested to the second without sleeping.
"""

from __future__ import annotations

import pytest

from shared.ui.auth import (
    EASY_AUTH_NAME_HEADER,
    SESSION_COOKIE,
    TICKET_SECONDS,
    UI_PATH,
    DashboardAuth,
    Viewer,
    safe_next,
    same_origin,
)

KEY = "correct-horse-battery-staple"
OTHER_KEY = "another-dashboard-key"
START = 1_800_000_000.0  # seconds since the epoch; any fixed instant
HOST = "127.0.0.1:7071"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def auth(
    key: str | None = KEY, *, trust_easy_auth: bool = False, session_hours: float = 8, clock: Clock | None = None
) -> DashboardAuth:
    return DashboardAuth(key, trust_easy_auth=trust_easy_auth, session_hours=session_hours, clock=clock)


def cookie_pair(set_cookie: str) -> str:
    """What a browser sends back for a Set-Cookie value: its first `name=value` pair."""
    return set_cookie.split("; ")[0]


def token_of(set_cookie: str) -> str:
    name, _, value = cookie_pair(set_cookie).partition("=")
    assert name == SESSION_COOKIE
    return value


def attributes(set_cookie: str) -> list[str]:
    return set_cookie.split("; ")[1:]


def changed(text: str, index: int) -> str:
    """`text` with the character at `index` replaced by another character of the same alphabet."""
    replacement = "B" if text[index] == "A" else "A"
    return text[:index] + replacement + text[index + 1 :]


# -- the key as a bearer token -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_key_as_a_bearer_token_admits_the_dashboard_key(scheme):
    # given a request carrying the key, the scheme in any case
    headers = {"authorization": f"{scheme} {KEY}"}

    # when its viewer is looked up
    viewer = auth().viewer(headers)

    # then it is the dashboard key, by bearer token
    assert viewer == Viewer("dashboard key", "bearer")
    assert viewer.sends_ambient_credentials is False


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {OTHER_KEY}"},
        {"authorization": f"Bearer {KEY}x"},
        {"authorization": "Bearer "},
        {"authorization": "Bearer"},
        {"authorization": f"Basic {KEY}"},
        {"authorization": KEY},
        {},
    ],
    ids=["wrong-key", "key-with-suffix", "empty-key", "scheme-only", "basic-scheme", "no-scheme", "no-header"],
)
def test_anything_but_the_key_as_a_bearer_token_admits_no_one(headers):
    # given a request without the key as a bearer token
    # when its viewer is looked up
    # then there is none
    assert auth().viewer(headers) is None


def test_key_matches_only_the_exact_key():
    # given a dashboard with a key, and one without
    with_key, without = auth(), auth(None)

    # then only the exact key matches, and nothing matches when no key is set
    assert with_key.key_matches(KEY) is True
    assert with_key.key_matches(KEY.upper()) is False
    assert with_key.key_matches("") is False
    assert without.key_matches("") is False
    assert without.key_matches(KEY) is False


# -- the session cookie ------------------------------------------------------------------------------------------


def test_a_session_cookie_sent_back_admits_whom_it_was_opened_for():
    # given session cookies opened for the key and for a one-time link
    dashboard = auth()
    for_key = dashboard.session_cookie(secure=False)
    for_link = dashboard.session_cookie(secure=False, who="one-time link")

    # when a browser sends each back
    by_key = dashboard.viewer({"cookie": cookie_pair(for_key)})
    by_link = dashboard.viewer({"cookie": cookie_pair(for_link)})

    # then each admits whom it was opened for, by cookie
    assert by_key == Viewer("dashboard key", "cookie")
    assert by_link == Viewer("one-time link", "cookie")
    assert by_link.sends_ambient_credentials is True


def test_a_session_cookie_is_http_only_strict_scoped_to_the_dashboard_and_expiring():
    # given a dashboard whose sessions last 8 hours
    dashboard = auth(session_hours=8)

    # when it opens a session over plain HTTP and over HTTPS
    plain = dashboard.session_cookie(secure=False)
    secure = dashboard.session_cookie(secure=True)

    # then both cookies have the same attributes, and only the HTTPS one is Secure
    assert cookie_pair(plain).startswith(f"{SESSION_COOKIE}=")
    assert attributes(plain) == ["Path=/api/ui", "Max-Age=28800", "HttpOnly", "SameSite=Strict"]
    assert attributes(secure) == ["Path=/api/ui", "Max-Age=28800", "HttpOnly", "SameSite=Strict", "Secure"]
    assert dashboard.session_seconds == 28800


def test_a_fractional_session_length_is_whole_seconds():
    # given sessions of a quarter of an hour
    # when a cookie is opened
    set_cookie = auth(session_hours=0.25).session_cookie(secure=False)

    # then it lasts 900 seconds
    assert "Max-Age=900" in attributes(set_cookie)


def test_two_sessions_are_two_different_cookies():
    # given one dashboard, at one instant
    dashboard = auth(clock=Clock())

    # when it opens two sessions for the same viewer
    first, second = dashboard.session_cookie(secure=False), dashboard.session_cookie(secure=False)

    # then their values differ (each has its own session id)
    assert token_of(first) != token_of(second)


def test_the_cleared_cookie_empties_the_session_and_admits_no_one():
    # given the cookie that logging out sets
    cleared = DashboardAuth.cleared_cookie(secure=True)

    # then it empties the session cookie at once, with the session's scope
    assert cleared == f"{SESSION_COOKIE}=; Path=/api/ui; Max-Age=0; HttpOnly; SameSite=Strict; Secure"
    assert DashboardAuth.cleared_cookie(secure=False) == (
        f"{SESSION_COOKIE}=; Path=/api/ui; Max-Age=0; HttpOnly; SameSite=Strict"
    )
    # and sent back as it is, it admits no one
    assert auth().viewer({"cookie": cookie_pair(cleared)}) is None


@pytest.mark.parametrize("part", ["payload", "signature"])
def test_a_session_cookie_changed_by_one_character_admits_no_one(part):
    # given a genuine session cookie, and the same with one character changed in its payload or its signature
    dashboard = auth()
    token = token_of(dashboard.session_cookie(secure=False))
    payload_end = token.index(".")
    # the signature's last character may only carry padding bits, so change one in its middle
    index = 0 if part == "payload" else (token.rindex(".") + len(token)) // 2
    tampered = changed(token, index)
    assert tampered != token and len(tampered) == len(token) and payload_end == tampered.index(".")

    # when each is sent back
    genuine = dashboard.viewer({"cookie": f"{SESSION_COOKIE}={token}"})
    forged = dashboard.viewer({"cookie": f"{SESSION_COOKIE}={tampered}"})

    # then only the genuine one admits anyone
    assert genuine == Viewer("dashboard key", "cookie")
    assert forged is None


def test_a_session_cookie_signed_with_another_key_admits_no_one():
    # given a cookie from a dashboard with another key
    foreign = auth(OTHER_KEY).session_cookie(secure=False)

    # when it is sent to this dashboard
    # then it admits no one here, though it does where it was made
    assert auth().viewer({"cookie": cookie_pair(foreign)}) is None
    assert auth(OTHER_KEY).viewer({"cookie": cookie_pair(foreign)}) == Viewer("dashboard key", "cookie")


def test_a_session_cookie_lasts_session_hours_to_the_second():
    # given a one-hour session opened at START
    clock = Clock()
    dashboard = auth(session_hours=1, clock=clock)
    headers = {"cookie": cookie_pair(dashboard.session_cookie(secure=False))}

    # when the clock reaches the session's end, it still admits
    clock.now = START + 3600
    at_the_end = dashboard.viewer(headers)
    # and one second later it does not
    clock.now = START + 3601
    past_the_end = dashboard.viewer(headers)

    # then
    assert at_the_end == Viewer("dashboard key", "cookie")
    assert past_the_end is None


@pytest.mark.parametrize(
    "cookie",
    [
        f'{SESSION_COOKIE}="unterminated',
        f"{SESSION_COOKIE}=",
        f"{SESSION_COOKIE}",
        f"{SESSION_COOKIE}=not-a-signed-value",
        f"{SESSION_COOKIE}=a.b.c",
        "=;=;;",
        "\x00\x01\x02",
        "théme=sombre; é=è",
    ],
)
def test_a_malformed_cookie_header_admits_no_one_and_raises_nothing(cookie):
    # given a Cookie header that is malformed or holds no genuine session
    # when its viewer is looked up
    # then there is none, and no exception
    assert auth().viewer({"cookie": cookie}) is None


def test_other_cookies_alongside_the_session_are_ignored():
    # given the session cookie between two unrelated ones
    dashboard = auth()
    session = cookie_pair(dashboard.session_cookie(secure=False))
    headers = {"cookie": f"theme=dark; {session}; AppServiceAuthSession=opaque"}

    # when its viewer is looked up
    # then the session admits
    assert dashboard.viewer(headers) == Viewer("dashboard key", "cookie")


def test_a_cookie_under_another_name_admits_no_one():
    # given a genuine session value under another cookie name
    token = token_of(auth().session_cookie(secure=False))

    # then it admits no one
    assert auth().viewer({"cookie": f"session={token}"}) is None


def test_the_bearer_token_comes_before_the_cookie():
    # given a request carrying both a session cookie and the key
    dashboard = auth()
    headers = {
        "authorization": f"Bearer {KEY}",
        "cookie": cookie_pair(dashboard.session_cookie(secure=False, who="one-time link")),
    }

    # then the viewer is the bearer, who sends no ambient credentials
    assert dashboard.viewer(headers) == Viewer("dashboard key", "bearer")


# -- App Service Authentication -----------------------------------------------------------------------------------


def test_easy_auth_principal_admits_only_when_trusted():
    # given a request with App Service Authentication's principal header
    headers = {EASY_AUTH_NAME_HEADER: "ada@contoso.com"}
    assert EASY_AUTH_NAME_HEADER == "x-ms-client-principal-name"

    # when a dashboard that trusts it, and one that does not, look up its viewer
    trusted = auth(trust_easy_auth=True).viewer(headers)
    untrusted = auth(trust_easy_auth=False).viewer(headers)

    # then only the trusting one admits the principal, by Easy Auth
    assert trusted == Viewer("ada@contoso.com", "easy_auth")
    assert trusted.sends_ambient_credentials is True
    assert untrusted is None


def test_easy_auth_alone_configures_the_dashboard():
    # given no key, but Easy Auth trusted
    dashboard = auth(None, trust_easy_auth=True)

    # then the dashboard is configured and admits the principal, with surrounding blanks removed
    assert dashboard.configured is True
    assert dashboard.viewer({EASY_AUTH_NAME_HEADER: "  ada@contoso.com "}) == Viewer("ada@contoso.com", "easy_auth")


@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_a_blank_easy_auth_principal_is_ignored(name):
    # given Easy Auth trusted, and a blank principal header
    # when its viewer is looked up
    # then there is none
    assert auth(None, trust_easy_auth=True).viewer({EASY_AUTH_NAME_HEADER: name}) is None


# -- not configured ------------------------------------------------------------------------------------------------


def test_without_key_or_easy_auth_no_one_gets_in():
    # given a dashboard with no key and Easy Auth not trusted
    dashboard = auth(None, trust_easy_auth=False)

    # then it is not configured, and no request is admitted: not an empty bearer, not a principal header
    assert dashboard.configured is False
    assert auth().configured is True
    assert dashboard.viewer({"authorization": "Bearer "}) is None
    assert dashboard.viewer({"authorization": "Bearer"}) is None
    assert dashboard.viewer({EASY_AUTH_NAME_HEADER: "ada@contoso.com"}) is None
    # and a cookie from a dashboard with a key means nothing to it
    assert dashboard.viewer({"cookie": cookie_pair(auth().session_cookie(secure=False))}) is None
    assert dashboard.ticket_nonce(auth().ticket()[0]) is None


def test_without_a_key_there_are_no_sessions_or_tickets_to_open():
    # given a dashboard trusting only Easy Auth
    dashboard = auth(None, trust_easy_auth=True)

    # when it is asked for a session cookie or a ticket
    # then it refuses, saying why
    with pytest.raises(AssertionError, match="sessions need a DASHBOARD_KEY"):
        dashboard.session_cookie(secure=True)
    with pytest.raises(AssertionError, match="tickets need a DASHBOARD_KEY"):
        dashboard.ticket()


# -- one-time tickets ---------------------------------------------------------------------------------------------


def test_a_ticket_gives_back_its_nonce():
    # given a ticket and its nonce
    dashboard = auth()
    ticket, nonce = dashboard.ticket()

    # when the ticket is redeemed
    # then it gives back the nonce: 32 hex digits, different from another ticket's
    assert dashboard.ticket_nonce(ticket) == nonce
    assert len(nonce) == 32 and int(nonce, 16) >= 0
    assert dashboard.ticket()[1] != nonce


def test_a_ticket_lasts_ticket_seconds_to_the_second():
    # given a ticket made at START
    clock = Clock()
    dashboard = auth(clock=clock)
    ticket, nonce = dashboard.ticket()
    assert TICKET_SECONDS == 900

    # when the clock reaches its end it is still good, and one second later it is not
    clock.now = START + TICKET_SECONDS
    at_the_end = dashboard.ticket_nonce(ticket)
    clock.now = START + TICKET_SECONDS + 1
    past_the_end = dashboard.ticket_nonce(ticket)

    # then
    assert at_the_end == nonce
    assert past_the_end is None


def test_a_ticket_from_another_key_gives_no_nonce():
    # given a ticket made by a dashboard with another key
    ticket, _ = auth(OTHER_KEY).ticket()

    # then this dashboard does not accept it
    assert auth().ticket_nonce(ticket) is None


@pytest.mark.parametrize("ticket", ["", "not-a-ticket", "a.b.c"])
def test_a_forged_ticket_gives_no_nonce(ticket):
    assert auth().ticket_nonce(ticket) is None


def test_a_session_cookie_is_not_a_ticket_and_a_ticket_is_not_a_session_cookie():
    # given a genuine session cookie value and a genuine ticket of one dashboard
    dashboard = auth()
    session = token_of(dashboard.session_cookie(secure=False))
    ticket, _ = dashboard.ticket()

    # when each is offered as the other
    session_as_ticket = dashboard.ticket_nonce(session)
    ticket_as_session = dashboard.viewer({"cookie": f"{SESSION_COOKIE}={ticket}"})

    # then neither is accepted (their signatures have different salts)
    assert session_as_ticket is None
    assert ticket_as_session is None


# -- where a state change comes from -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "host", "expected"),
    [
        ({"origin": "http://127.0.0.1:7071"}, HOST, True),
        ({"origin": "HTTP://127.0.0.1:7071"}, HOST, True),
        ({"origin": "https://func-ftap.azurewebsites.net"}, "FUNC-FTAP.azurewebsites.net", True),
        ({"origin": "http://127.0.0.1:7072"}, HOST, False),
        ({"origin": "http://evil.example"}, HOST, False),
        ({"origin": "null"}, HOST, False),
        ({"referer": "http://127.0.0.1:7071/api/ui/runs/ft-0123456789ab"}, HOST, True),
        ({"referer": "http://evil.example/api/ui"}, HOST, False),
        ({"origin": "http://evil.example", "referer": "http://127.0.0.1:7071/api/ui"}, HOST, False),
        ({}, HOST, False),
        ({"origin": "http://127.0.0.1:7071"}, "", False),
        ({}, "", False),
    ],
    ids=[
        "same-origin",
        "scheme-case",
        "host-case",
        "other-port",
        "other-host",
        "opaque-origin",
        "same-referer",
        "other-referer",
        "origin-wins-over-referer",
        "neither",
        "empty-host",
        "nothing-at-all",
    ],
)
def test_same_origin_needs_the_origin_or_else_the_referer_to_name_this_host(headers, host, expected):
    # given a request's Origin and Referer, and the host it came to
    # when its origin is checked
    # then it is ours only when the Origin (or, without one, the Referer) names this host
    assert same_origin(headers, host) is expected


# -- where sign-in goes next ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/api/ui", "/api/ui/runs/ft-0123456789ab", "/api/ui/runs?state=failed"])
def test_safe_next_keeps_a_dashboard_path(target):
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/api/ui",
        "/api/other",
        "api/ui",
        "",
        None,
        "/api/ui\\..\\x",
        "/api/ui/\\evil.example",
    ],
)
def test_safe_next_sends_anything_else_to_the_dashboard(target):
    assert safe_next(target) == UI_PATH == "/api/ui"


@pytest.mark.parametrize(
    "target", ["/api/ui-admin", "/api/uiother", "/api/ui/../other", "/api/ui/x\r\nSet-Cookie: a=b"]
)
def test_safe_next_refuses_a_path_that_only_shares_the_dashboards_prefix_or_leaves_it(target):
    # given a same-site path that merely begins with the characters of /api/ui, climbs out of it, or splits a header
    # when it is the target after sign-in
    # then sign-in goes to the dashboard instead
    assert safe_next(target) == "/api/ui"


def test_the_key_also_comes_in_its_own_header_for_hosts_whose_auth_takes_the_authorization_header():
    # given a dashboard with a key
    auth = DashboardAuth("k" * 43, trust_easy_auth=True, session_hours=1)

    # when a script sends it as X-Dashboard-Key (App Service Authentication may answer a non-JWT bearer itself)
    # then it gets in as a bearer does; a wrong value does not
    assert auth.viewer({"x-dashboard-key": "k" * 43}) == Viewer("dashboard key", "bearer")
    assert auth.viewer({"x-dashboard-key": "k" * 42}) is None
