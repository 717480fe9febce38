"""The dashboard against a server with bearer tokens (OPSTREAM_TOKENS): the sign-in panel,
stream tokens in EventSource URLs (never the bearer token), their renewal mid-operation, a
refused stream that comes back from its cursor, and one tenant never seeing another's work.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import RUN_MS, STEP_MS, CuttableProxy
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.browser

ACME = "acme-token-0123456789abcdef"
BETA = "beta-token-0123456789abcdef"
TOKENS = f"acme:{ACME},beta:{BETA}"
SLOW: dict[str, Any] = {"steps": 60, "intervalMs": 100}
API = re.compile(r"^/(operations|events|kinds|stream-tokens)")


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start(server: ServerProcess, token: str = ACME, **params: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/operations",
        json={"kind": "demo.countdown", "params": params},
        headers=headers(token),
    )
    assert response.status_code == 202, response.text
    doc: dict[str, Any] = response.json()
    return doc


def history(server: ServerProcess, op_id: str, token: str = ACME) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        after = events[-1]["seq"] if events else 0
        response = httpx.get(
            f"{server.url}/operations/{op_id}/events",
            params={"after": after, "limit": 1000},
            headers=headers(token),
        )
        assert response.status_code == 200, response.text
        events.extend(response.json())
        if len(response.json()) < 1000:
            return events


def assert_exactly_once(page: Any, server: ServerProcess, op_id: str) -> list[dict[str, Any]]:
    events = history(server, op_id)
    expected = list(range(1, events[-1]["seq"] + 1))
    assert [e["seq"] for e in events] == expected
    page.wait_for_function(
        "n => document.querySelectorAll('#timeline li').length >= n", arg=len(expected)
    )
    seqs = page.eval_on_selector_all("#timeline li", "lis => lis.map(li => Number(li.dataset.seq))")
    assert seqs == expected
    return events


def wait_for_status(page: Any, status: str, timeout: int = RUN_MS) -> None:
    page.wait_for_selector(f"#detail-status[data-status='{status}']", timeout=timeout)


class Traffic:
    """What the page asked of the server: every API URL, and the ones without credentials."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        self.bare: list[tuple[int, str]] = []  # (index in urls, path)
        self.statuses: list[tuple[int, str]] = []
        page.on("request", self.on_request)
        page.on("response", lambda r: self.statuses.append((r.status, r.url)))

    def on_request(self, request: Any) -> None:
        path = re.sub(r"^https?://[^/]+", "", request.url)
        if not API.match(path):
            return
        self.urls.append(path)
        if "authorization" not in request.all_headers() and "access_token=" not in path:
            self.bare.append((len(self.urls) - 1, path))

    def bare_since(self, mark: int) -> list[str]:
        return [path for index, path in self.bare if index >= mark]

    def stream_tokens(self, path: str) -> list[str]:
        """The distinct stream tokens the page put in URLs of `path`."""
        found = []
        for url in self.urls:
            if url.startswith(path):
                match = re.search(r"access_token=([^&]+)", url)
                if match and match.group(1) not in found:
                    found.append(match.group(1))
        return found

    def assert_no_bearer_in_urls(self) -> None:
        for token in (ACME, BETA):
            assert not [u for u in self.urls if token in u], "a bearer token went into a URL"


@pytest.fixture
def authed(tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(tmp_path, OPSTREAM_TOKENS=TOKENS, OPSTREAM_LEASE_SECONDS="2")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def short_tokens(tmp_path: Path) -> Iterator[ServerProcess]:
    """Stream tokens that last 3 s: several renewals during one operation."""
    process = start_server(tmp_path, OPSTREAM_TOKENS=TOKENS, OPSTREAM_STREAM_TOKEN_SECONDS="3")
    try:
        yield process
    finally:
        process.stop()


def signed_in(context: Any, token: str) -> None:
    """Every page of the context starts signed in for this tab (as the panel would leave it)."""
    context.add_init_script(f"sessionStorage.setItem('opstream.token', {token!r})")


def sign_in(page: Any, token: str, remember: bool = False) -> None:
    page.wait_for_selector("#signin:not([hidden])")
    page.fill("#signin-token", token)
    if remember:
        page.check("#signin-remember")
    page.click("#signin-button")


def test_sign_in_then_watch_a_countdown_to_100_percent_then_sign_out(
    page: Any, authed: ServerProcess, shoot: Any
) -> None:
    traffic = Traffic(page)
    page.goto(f"{authed.url}/")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.get_attribute("#signin-token", "type") == "password"
    assert page.evaluate("document.activeElement.id") == "signin-token"
    assert page.is_hidden("#view-list") and page.is_hidden("#signout")
    shoot(page, "signin-panel")

    sign_in(page, ACME)
    page.wait_for_selector("#signin", state="hidden")
    mark = len(traffic.urls)
    page.wait_for_selector("#signout:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('opstream.token')") == ACME
    assert page.evaluate("localStorage.getItem('opstream.token')") is None, "not remembered"

    page.wait_for_selector("#kind option[value='demo.countdown']", state="attached")
    page.wait_for_selector("#param-steps")
    page.fill("#param-steps", "25")
    page.fill("#param-intervalMs", "60")
    page.click("#start-button")
    page.wait_for_url(re.compile(r"#/operations/op_"), timeout=STEP_MS)
    op_id = page.url.split("#/operations/")[1]
    wait_for_status(page, "succeeded")
    page.wait_for_function(
        "document.getElementById('detail-bar').getAttribute('aria-valuenow') === '100'"
    )
    assert page.inner_text("#detail-percent") == "100%"
    events = assert_exactly_once(page, authed, op_id)
    assert events[-1]["type"] == "OperationSucceeded"
    page.wait_for_selector("#result-preview .json-key")  # the preview is fetched with the token

    # The download goes with the token too (a plain link would get a 401).
    with page.expect_download() as download:
        page.click("#result-download")
    assert b'"steps"' in Path(download.value.path()).read_bytes()

    # Streams used stream tokens: the feed's and this operation's, each of its own scope.
    assert traffic.stream_tokens(f"/operations/{op_id}/events/stream")
    assert traffic.stream_tokens("/events/stream")
    traffic.assert_no_bearer_in_urls()
    bare = traffic.bare_since(mark)
    assert bare == [], f"requests after signing in without credentials: {bare}"

    # The list shows it too, live from the feed.
    page.click(".back-link")
    page.wait_for_selector(f"#ops-body tr[data-id='{op_id}'][data-status='succeeded']")

    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('opstream.token')") is None
    assert page.is_hidden("#signout")
    assert page.locator("#ops-body tr").count() == 0


def test_a_wrong_token_says_so_on_the_panel(page: Any, authed: ServerProcess, shoot: Any) -> None:
    page.goto(f"{authed.url}/")
    sign_in(page, "not-a-real-token-0123456789")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "not accepted" in page.inner_text("#signin-error")
    assert page.get_attribute("#signin-token", "aria-invalid") == "true"
    assert page.is_visible("#signin") and page.is_hidden("#signout")
    assert page.evaluate("sessionStorage.getItem('opstream.token')") is None
    shoot(page, "signin-wrong-token")

    # Remembered this time: it survives a new tab (localStorage), and the panel stays away.
    page.fill("#signin-token", BETA)
    assert page.is_hidden("#signin-error"), "typing clears the error"
    page.check("#signin-remember")
    page.click("#signin-button")
    page.wait_for_selector("#signin", state="hidden")
    assert page.evaluate("localStorage.getItem('opstream.token')") == BETA
    second = page.context.new_page()
    second.goto(f"{authed.url}/")
    second.wait_for_selector("#kind option[value='demo.countdown']", state="attached")
    assert second.is_hidden("#signin")
    second.close()


def test_stream_tokens_expire_mid_operation_and_are_renewed_exactly_once(
    context: Any, short_tokens: ServerProcess
) -> None:
    proxy = CuttableProxy(short_tokens.port)
    try:
        signed_in(context, ACME)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        traffic = Traffic(page)
        op = start(short_tokens, **SLOW)  # about 6 s: two 3-second tokens run out meanwhile
        page.goto(f"{proxy.url}/#/operations/{op['id']}")
        page.wait_for_selector("#timeline li[data-seq='5']", state="attached")
        time.sleep(3.2)  # the first token has expired by now
        assert proxy.cut() > 0  # and the network drops: the reconnect needs a valid token
        wait_for_status(page, "succeeded")
        events = assert_exactly_once(page, short_tokens, op["id"])
        assert sum(e["type"] == "ProgressUpdated" for e in events) == SLOW["steps"]
        used = traffic.stream_tokens(f"/operations/{op['id']}/events/stream")
        assert len(used) >= 3, f"the operation's stream token was not renewed: {used}"
        traffic.assert_no_bearer_in_urls()
        assert errors == []
        # The server's own log never shows a stream token either.
        log = short_tokens.log()
        assert not [t for t in used if t in log]
    finally:
        proxy.close()


def test_a_restarted_server_refuses_old_stream_tokens_and_the_page_comes_back(
    context: Any, authed: ServerProcess
) -> None:
    """Without OPSTREAM_SECRET a restarted server cannot check the tokens it issued before:
    the EventSource's own reconnect gets a 401 and gives up; the page gets a new token and
    reopens from its cursor."""
    signed_in(context, ACME)
    page = context.new_page()
    traffic = Traffic(page)
    op = start(authed, **SLOW)
    page.goto(f"{authed.url}/#/operations/{op['id']}")
    page.wait_for_selector("#timeline li[data-seq='8']", state="attached")
    authed.restart()  # kill -9, same port and database, a new stream-token key
    wait_for_status(page, "succeeded")
    events = assert_exactly_once(page, authed, op["id"])
    assert "OperationRetried" in [e["type"] for e in events]
    stream = f"/operations/{op['id']}/events/stream"
    refused = [url for status, url in traffic.statuses if status == 401 and stream in url]
    assert refused, "the old token was expected to be refused"
    assert len(traffic.stream_tokens(stream)) >= 2
    assert page.is_hidden("#signin"), "a refused stream token is not a reason to sign in again"


def test_a_tenant_sees_only_its_own_operations(context: Any, authed: ServerProcess) -> None:
    theirs = start(authed, ACME, steps=2, intervalMs=0)
    ours = start(authed, BETA, steps=2, intervalMs=0)
    signed_in(context, BETA)
    page = context.new_page()
    page.goto(f"{authed.url}/")
    page.wait_for_selector(f"#ops-body tr[data-id='{ours['id']}']")
    # Live: a new operation of the other tenant never reaches this feed; one of ours does.
    theirs_live = start(authed, ACME, steps=3, intervalMs=10)
    ours_live = start(authed, BETA, steps=3, intervalMs=10)
    page.wait_for_selector(f"#ops-body tr[data-id='{ours_live['id']}'][data-status='succeeded']")
    time.sleep(0.5)
    ids = page.eval_on_selector_all("#ops-body tr", "trs => trs.map(tr => tr.dataset.id)")
    assert set(ids) == {ours["id"], ours_live["id"]}
    assert theirs["id"] not in ids and theirs_live["id"] not in ids

    # And the other tenant's operation by its link is simply not there.
    page.goto(f"{authed.url}/#/operations/{theirs['id']}")
    page.wait_for_selector("#detail-missing:not([hidden])")
    assert "no operation with this id" in page.inner_text("#detail-missing").lower()
    assert page.is_hidden("#signin")


def test_open_mode_has_no_sign_in(page: Any, server: Any) -> None:
    traffic = Traffic(page)
    page.goto(f"{server.url}/")
    page.wait_for_selector("#kind option[value='demo.countdown']", state="attached")
    page.wait_for_function("document.getElementById('connection').dataset.state === 'live'")
    assert page.is_hidden("#signin") and page.is_hidden("#signout")
    assert "/stream-tokens" not in traffic.urls
    assert not [u for u in traffic.urls if "access_token" in u]


def test_a_token_the_server_stops_accepting_brings_the_panel_back(
    page: Any, authed: ServerProcess
) -> None:
    op = start(authed, ACME, steps=2, intervalMs=0)
    page.goto(f"{authed.url}/")
    sign_in(page, ACME, remember=True)
    page.wait_for_selector(f"#ops-body tr[data-id='{op['id']}']")
    page.wait_for_function("document.getElementById('connection').dataset.state === 'live'")

    # The operator replaces acme's token; the live feed's reconnect finds out.
    renewed = "acme-renewed-token-0123456789"
    authed.env = {**authed.env, "OPSTREAM_TOKENS": f"acme:{renewed},beta:{BETA}"}
    authed.restart()
    page.wait_for_selector("#signin:not([hidden])", timeout=RUN_MS)
    assert "no longer accepts" in page.inner_text("#signin-intro")
    assert page.evaluate("localStorage.getItem('opstream.token')") is None, "the old one is gone"

    page.fill("#signin-token", renewed)
    page.click("#signin-button")  # a new session starts from a clean page
    page.wait_for_selector(f"#ops-body tr[data-id='{op['id']}']")
    assert page.is_hidden("#signin")
    assert page.evaluate("sessionStorage.getItem('opstream.token')") == renewed
