"""The dashboard in a real browser, against the dev host with real runs of the tiny model: three lines (support keeps
its endpoint, legal's is torn down by the idle sweep, broken's upload is rejected). Every page is loaded, signed in
the ways a person signs in, and photographed under .state/screenshots/; no page holds a key, and none loads
anything from another origin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from shared.adapters.azurite import Azurite
from shared.context import get_context
from shared.devhost import DevHost
from shared.ui.render import render_standalone
from shared.usecases.costs import prices
from shared.usecases.dashboard import run_page
from tests.browser.shots import screenshot
from tests.e2e.hosts import local_dev_host, put_dataset

SAMPLE = Path(__file__).resolve().parents[2] / "samples"
SETTLED = {"deployed", "torn_down", "rejected", "failed", "gated_out", "rolled_back", "canceled", "superseded"}
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def host(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    """The dev host with three lines' uploads taken in (their runs may still be training)."""
    # a short idle window for lines without a line.json (legal), swept every 2 s; support keeps its endpoint
    with local_dev_host(azurite, tmp_path_factory.mktemp("ui"), "ui", idle_minutes=0.1) as dev:
        put_dataset(dev, "support/line.json", b'{"idle_minutes": 30}')
        sample = (SAMPLE / "ultrachat_sample.jsonl").read_bytes()
        put_dataset(dev, "support/first.jsonl", sample)
        put_dataset(dev, "legal/all.jsonl", b"".join(sample.splitlines(keepends=True)[40:]))
        put_dataset(dev, "broken/export.jsonl", (SAMPLE / "ultrachat_broken.jsonl").read_bytes())
        wait_for(lambda: len(runs(dev)) == 3, "three runs recorded")
        yield dev


def runs(host: DevHost) -> dict[str, dict[str, Any]]:
    """The host's runs by line, through the API."""
    reply = requests.get(f"{host.base_url}/api/runs", headers={"x-functions-key": host.function_key}, timeout=30)
    return {run["line"]: run for run in reply.json()["runs"]}


def wait_for(condition, what: str, timeout_s: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.5)


def settled(host: DevHost, line: str, state: str | None = None) -> dict[str, Any]:
    wait_for(
        lambda: runs(host)[line]["state"] in ({state} if state else SETTLED), f"line {line}'s run {state or 'done'}"
    )
    return runs(host)[line]


def sign_in(page: Page, host: DevHost) -> None:
    page.goto(f"{host.base_url}/api/ui/login")
    page.fill("#key", host.dashboard_key)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")


def holds_no_key(page: Page, host: DevHost) -> None:
    html = page.content()
    assert host.dashboard_key not in html and host.function_key not in html


def test_a_run_page_follows_its_run_without_a_reload(host: DevHost, page: Page, blocked_requests: list[str]) -> None:
    # given support's run, still training, and its page open
    run_id = runs(host)["support"]["run_id"]
    sign_in(page, host)
    page.goto(f"{host.base_url}/api/ui/runs/{run_id}")
    page.evaluate("window.notReloaded = true")
    expect(page.locator("text=This page updates every 5 s")).to_be_visible()
    screenshot(page, "run-active")

    # when the run finishes and deploys
    expect(page.locator("#run-state")).to_have_text("deployed", timeout=RUN_TIMEOUT_S * 1000)

    # then the page showed it in place: the same document, the timeline complete, polling over
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#timeline li")).to_have_count(8)
    expect(page.locator("text=This page updates every 5 s")).to_have_count(0)
    assert blocked_requests == []


def test_a_visitor_who_is_not_signed_in_sees_the_login_page_and_no_data(host: DevHost, page: Page) -> None:
    # when a browser opens the overview without signing in
    page.goto(f"{host.base_url}/api/ui")

    # then it is on the login page, which names no line
    assert page.url.startswith(f"{host.base_url}/api/ui/login?next=/api/ui")
    expect(page.locator("h1")).to_have_text("Sign in to the dashboard")
    assert "support" not in page.content()
    screenshot(page, "login")


def test_a_wrong_key_is_refused_and_not_echoed(host: DevHost, page: Page) -> None:
    page.goto(f"{host.base_url}/api/ui/login")
    page.fill("#key", "not-the-key-1234")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("That is not the dashboard key.")
    assert "not-the-key-1234" not in page.content()


def test_every_page_loads_signed_in_and_holds_no_key(host: DevHost, page: Page, blocked_requests: list[str]) -> None:
    # given every line's run settled
    support, _, broken = (settled(host, line) for line in ("support", "legal", "broken"))
    assert (support["state"], broken["state"]) == ("deployed", "rejected")

    # when a person signs in with the key and walks through the pages
    sign_in(page, host)
    expect(page.locator("#lines tbody tr")).to_have_count(3)
    expect(page.locator("#lines")).to_contain_text("support-ft-chat:1")
    holds_no_key(page, host)
    screenshot(page, "overview")

    page.click("header >> text=Lines")
    expect(page.locator("#lines tbody tr")).to_have_count(3)
    holds_no_key(page, host)
    screenshot(page, "lines")

    page.click("#lines >> text=support")
    expect(page.locator("h1")).to_have_text("Line support")
    expect(page.locator("#score-chart")).to_be_visible()
    expect(page.locator("#line-runs")).to_contain_text(support["run_id"])
    expect(page.locator("select#dataset option")).to_have_text(["support/first.jsonl"])
    holds_no_key(page, host)
    screenshot(page, "line-support")

    page.click(f"#line-runs >> text={support['run_id']}")
    expect(page.locator("#run-state")).to_have_text("deployed")
    expect(page.locator("#validation")).to_contain_text("240 rows")
    expect(page.locator("#cost")).to_contain_text("$0.00")
    expect(page.locator("#loss-curve")).to_be_visible()
    expect(page.locator("#checks li")).to_have_count(3)
    assert page.locator("#examples .example").count() == support["evaluation"]["examples"]
    expect(page.locator("#deployment")).to_contain_text("support-ft-chat:1")
    holds_no_key(page, host)
    screenshot(page, "run-deployed")

    page.goto(f"{host.base_url}/api/ui/runs/{broken['run_id']}")
    expect(page.locator("#run-state")).to_have_text("rejected")
    first_error = page.locator("#first-errors tbody tr").first.locator("td")
    expect(first_error).to_have_text(["6", "invalid_json", "not valid JSON: unexpected end of data at character 92"])
    expect(page.locator("#first-errors tbody tr")).to_have_count(8)
    screenshot(page, "run-rejected")

    page.click("header >> text=Endpoints")
    expect(page.locator("#live-endpoints")).to_contain_text("support")
    holds_no_key(page, host)
    screenshot(page, "endpoints")
    assert blocked_requests == []


def test_restore_brings_a_torn_down_endpoint_back(host: DevHost, page: Page) -> None:
    # given legal's endpoint torn down by the idle sweep
    legal = settled(host, "legal", "torn_down")
    endpoint = legal["endpoint"]["name"]
    put_dataset(host, "legal/line.json", b'{"idle_minutes": 30}')  # restored, it stays up while we look
    sign_in(page, host)
    page.goto(f"{host.base_url}/api/ui/endpoints")
    row = page.locator(f"#torn-down-endpoints tr[data-endpoint='{endpoint}']")
    expect(row).to_contain_text("legal")

    # when a person clicks Restore and confirms
    row.locator("text=Restore…").click()
    expect(page.locator("h1")).to_have_text(f"Restore endpoint {endpoint}?")
    screenshot(page, "confirm-restore")
    page.click("#confirm", timeout=120_000)

    # then the run is deployed again, and the endpoint is live with all traffic on it
    expect(page.locator(".notice")).to_contain_text("restored")
    expect(page.locator("#run-state")).to_have_text("deployed")
    page.goto(f"{host.base_url}/api/ui/endpoints")
    expect(page.locator(f"#live-endpoints tr[data-endpoint='{endpoint}']")).to_contain_text("100%")
    expect(page.locator(f"#torn-down-endpoints tr[data-endpoint='{endpoint}']")).to_have_count(0)
    screenshot(page, "endpoints-after-restore")


def test_a_one_time_link_signs_in_once(host: DevHost, browser: Browser) -> None:
    link = host.dashboard_url()
    assert host.dashboard_key not in link
    first, second = browser.new_context(), browser.new_context()
    try:
        # when the link is opened twice
        page = first.new_page()
        page.goto(link)
        expect(page.locator("h1")).to_have_text("Overview")
        again = second.new_page()
        again.goto(link)

        # then only the first opening signed in, with an HttpOnly, SameSite=Strict session cookie
        expect(again.locator(".error")).to_contain_text("used already")
        (cookie,) = first.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/api/ui")
        assert second.cookies() == []
    finally:
        first.close()
        second.close()


def test_without_a_credential_the_routes_answer_401_and_scripts_use_the_key(host: DevHost) -> None:
    for path in ("/api/ui", "/api/ui/lines", "/api/ui/lines/support", "/api/ui/endpoints"):
        refused = requests.get(host.base_url + path, timeout=30)
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
        assert "support" not in refused.text
        allowed = requests.get(
            host.base_url + path, headers={"Authorization": f"Bearer {host.dashboard_key}"}, timeout=60
        )
        assert allowed.status_code == 200 and host.dashboard_key not in allowed.text
    # the function key is not the dashboard key
    wrong = requests.get(
        host.base_url + "/api/ui", headers={"Authorization": f"Bearer {host.function_key}"}, timeout=30
    )
    assert wrong.status_code == 401


def test_a_change_from_another_site_is_refused_even_with_a_session(host: DevHost) -> None:
    # given a session cookie
    session = requests.Session()
    login = session.post(
        f"{host.base_url}/api/ui/login", data={"key": host.dashboard_key, "next": "/api/ui"}, allow_redirects=False
    )
    assert login.status_code == 303 and "autopilot_session" in session.cookies
    run_id = runs(host)["support"]["run_id"]

    # when another site's page posts a cancel with it
    forged = session.post(
        f"{host.base_url}/api/ui/runs/{run_id}/cancel", headers={"Origin": "http://evil.example"}, allow_redirects=False
    )

    # then it is refused, and the run is untouched
    assert forged.status_code == 403 and "cross_site_request" in forged.text
    assert runs(host)["support"]["state"] == "deployed"


def test_an_ad_hoc_run_of_content_that_ran_goes_to_its_run_after_a_confirmation(host: DevHost, page: Page) -> None:
    # given support's run of its upload, settled
    support = settled(host, "support")
    sign_in(page, host)
    page.goto(f"{host.base_url}/api/ui/lines/support")

    # when a person starts an ad-hoc run of the same upload and confirms
    page.select_option("select#dataset", "support/first.jsonl")
    page.click("text=Start…")
    expect(page.locator("h1")).to_have_text("Start a run on support/first.jsonl?")
    screenshot(page, "confirm-ad-hoc-run")
    page.click("#confirm")

    # then the same content with the same parameters is the same run: the page says so, and nothing new started
    expect(page.locator(".notice")).to_have_text("This content already ran with these parameters: this is its run.")
    assert page.url.startswith(f"{host.base_url}/api/ui/runs/{support['run_id']}")
    assert len(runs(host)) == 3


def test_cancel_asks_first_and_a_run_that_is_not_training_cannot_be(host: DevHost, page: Page) -> None:
    # given a deployed run (support's)
    run_id = settled(host, "support")["run_id"]
    sign_in(page, host)

    # when its cancellation is asked for directly, past the confirmation
    page.goto(f"{host.base_url}/api/ui/confirm?action=cancel&run_id={run_id}")
    expect(page.locator("h1")).to_have_text(f"Cancel run {run_id}?")
    page.click("#confirm")

    # then the use case refuses it, as the API does: the run is deployed, not submitted or running
    expect(page.locator(".error")).to_contain_text("invalid_transition")
    assert runs(host)["support"]["state"] == "deployed"


def test_a_run_page_written_as_one_file_opens_without_the_host(host: DevHost, browser: Browser, tmp_path: Path) -> None:
    # given support's run page written as a standalone file (as the demo writes it)
    run_id = settled(host, "support")["run_id"]
    ctx = get_context()
    html = render_standalone("run.html", page=run_page(ctx, run_id), prices=prices(ctx.settings), now=ctx.now())
    path = tmp_path / f"run-{run_id}.html"
    path.write_text(html, encoding="utf-8")

    # when it is opened from disk
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    try:
        page = context.new_page()
        page.goto(path.as_uri())

        # then it shows the run, styled, with its charts inline, and asked for nothing but itself
        expect(page.locator("#run-state")).to_have_text("deployed")
        expect(page.locator("#loss-curve")).to_be_visible()
        assert page.locator("script").count() == 0 and "Cancel run" not in html
        assert host.dashboard_key not in html
        assert [url for url in requested if not url.startswith(("file:", "data:"))] == []
        screenshot(page, "run-standalone")
    finally:
        context.close()
