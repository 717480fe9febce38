"""The dashboard in a real Chromium against a real server: live, gap-free, exactly once.

Each test watches what a person would watch — the bar, the status, the timeline — and checks
the timeline against the server's own history: every ``seq`` from 1 to the last, once each,
in order, whatever happened to the connection on the way.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.browser.conftest import RUN_MS, STEP_MS

pytestmark = pytest.mark.browser

# Long enough to act in the middle of, short enough for CI.
SLOW = {"steps": 60, "intervalMs": 100}


def start(server: Any, kind: str = "demo.countdown", **params: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/operations", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    doc: dict[str, Any] = response.json()
    return doc


def history(server: Any, op_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        after = events[-1]["seq"] if events else 0
        page = httpx.get(
            f"{server.url}/operations/{op_id}/events", params={"after": after, "limit": 1000}
        ).json()
        events.extend(page)
        if len(page) < 1000:
            return events


def timeline(page: Any) -> list[int]:
    seqs: list[int] = page.eval_on_selector_all(
        "#timeline li", "items => items.map(li => Number(li.dataset.seq))"
    )
    return seqs


def wait_for_status(page: Any, status: str, timeout: int = RUN_MS) -> None:
    page.wait_for_selector(f"#detail-status[data-status='{status}']", timeout=timeout)


def wait_for_seq(page: Any, seq: int, timeout: int = STEP_MS) -> None:
    page.wait_for_selector(f"#timeline li[data-seq='{seq}']", state="attached", timeout=timeout)


def wait_for_connection(page: Any, *states: str, timeout: int = STEP_MS) -> str:
    page.wait_for_function(
        "states => states.includes(document.getElementById('connection').dataset.state)",
        arg=list(states),
        timeout=timeout,
    )
    state: str = page.get_attribute("#connection", "data-state")
    return state


def assert_exactly_once(page: Any, server: Any, op_id: str) -> list[dict[str, Any]]:
    """The timeline is the server's history: 1..N, each once, in order, nothing more."""
    events = history(server, op_id)
    expected = list(range(1, events[-1]["seq"] + 1))
    assert [e["seq"] for e in events] == expected
    page.wait_for_function(
        "n => document.querySelectorAll('#timeline li').length >= n",
        arg=len(expected),
        timeout=STEP_MS,
    )
    assert timeline(page) == expected
    types = page.eval_on_selector_all("#timeline li", "items => items.map(li => li.dataset.type)")
    assert types == [e["type"] for e in events]
    return events


def open_form(page: Any, server: Any) -> None:
    page.goto(f"{server.url}/")
    page.wait_for_selector("#kind option[value='demo.countdown']", state="attached")
    page.wait_for_selector("#param-steps")


def test_start_from_the_form_reaches_100_percent_and_succeeds(
    page: Any, server: Any, shoot: Any
) -> None:
    open_form(page, server)
    page.select_option("#kind", "demo.countdown")
    page.fill("#param-steps", "25")
    page.fill("#param-intervalMs", "60")
    page.click("#start-button")

    page.wait_for_url(re.compile(r"#/operations/op_"), timeout=STEP_MS)
    op_id = page.url.split("#/operations/")[1]
    wait_for_seq(page, 3)  # live while it runs …
    assert page.get_attribute("#detail-status", "data-status") in ("running", "succeeded")

    wait_for_status(page, "succeeded")  # … to the end
    page.wait_for_function(
        "document.getElementById('detail-bar').getAttribute('aria-valuenow') === '100'"
    )
    assert page.inner_text("#detail-percent") == "100%"
    assert page.inner_text("#detail-status") == "Succeeded"
    events = assert_exactly_once(page, server, op_id)
    assert events[-1]["type"] == "OperationSucceeded"
    assert sum(e["type"] == "ProgressUpdated" for e in events) == 25

    # The result: inline JSON preview and a download link to the result resource.
    page.wait_for_selector("#result-preview .json-key")
    assert '"steps"' in page.inner_text("#result-preview")
    assert page.get_attribute("#result-download", "href") == f"/operations/{op_id}/result"
    # Details on demand: the first event's details open as JSON.
    page.click("#timeline li[data-seq='1'] summary")
    assert "demo.countdown" in page.inner_text("#timeline li[data-seq='1'] details pre")
    # The stream of a finished operation is closed: the indicator only follows the feed.
    assert wait_for_connection(page, "live") == "live"
    shoot(page, "detail-succeeded")

    page.click(".back-link")
    row = page.locator(f"#ops-body tr[data-id='{op_id}']")
    row.wait_for()
    assert row.get_attribute("data-status") == "succeeded"
    assert row.locator(".percent").inner_text() == "100%"
    shoot(page, "list")


def test_offline_mid_operation_then_back_shows_it_and_loses_nothing(
    page: Any, context: Any, server: Any, shoot: Any
) -> None:
    op = start(server, **SLOW)
    page.goto(f"{server.url}/#/operations/{op['id']}")
    wait_for_seq(page, 8)
    assert wait_for_connection(page, "live") == "live"

    context.set_offline(True)
    assert wait_for_connection(page, "offline") == "offline"
    assert page.inner_text("#connection") == "Offline"
    frozen = len(timeline(page))
    time.sleep(3)  # the operation runs on without us
    shoot(page, "detail-offline")
    assert len(timeline(page)) == frozen, "nothing can arrive while offline"
    assert httpx.get(f"{server.url}/operations/{op['id']}").json()["lastEventSeq"] > frozen + 5

    context.set_offline(False)
    assert wait_for_connection(page, "live", "reconnecting") in ("live", "reconnecting")
    wait_for_status(page, "succeeded")
    assert wait_for_connection(page, "live") == "live"
    assert_exactly_once(page, server, op["id"])

    # The list's feed caught up too.
    page.click(".back-link")
    row = page.locator(f"#ops-body tr[data-id='{op['id']}']")
    row.wait_for()
    page.wait_for_function(
        "id => document.querySelector(`#ops-body tr[data-id='${id}']`).dataset.status"
        " === 'succeeded'",
        arg=op["id"],
    )


def test_dropped_connection_reconnects_with_last_event_id_and_loses_nothing(
    page: Any, server: Any, proxy: Any
) -> None:
    op = start(server, **SLOW)
    page.goto(f"{proxy.url}/#/operations/{op['id']}")
    wait_for_seq(page, 8)
    assert wait_for_connection(page, "live") == "live"

    assert proxy.cut() > 0  # the network drops every connection, the server stays up
    assert wait_for_connection(page, "reconnecting", "offline") in ("reconnecting", "offline")
    wait_for_status(page, "succeeded")
    assert_exactly_once(page, server, op["id"])

    # The browser's own reconnect carried the cursor back to the server.
    stream = f"GET /operations/{op['id']}/events/stream"
    resumed = [r for r in proxy.requests if r.startswith(stream) and "last-event-id:" in r.lower()]
    assert resumed, proxy.requests


def test_reload_mid_operation_replays_history_and_follows_the_tail(page: Any, server: Any) -> None:
    op = start(server, **SLOW)
    page.goto(f"{server.url}/#/operations/{op['id']}")
    wait_for_seq(page, 10)
    page.reload()

    # History first: everything up to where we were is back at once …
    wait_for_seq(page, 10, timeout=STEP_MS)
    seen = timeline(page)
    assert seen == list(range(1, len(seen) + 1))
    status = page.get_attribute("#detail-status", "data-status")
    assert status == "running", "the operation should still be running after the reload"
    # … then the live tail continues past it.
    wait_for_seq(page, len(seen) + 5)
    wait_for_status(page, "succeeded")
    assert_exactly_once(page, server, op["id"])


def test_cancel_from_the_ui_then_delete(page: Any, server: Any, shoot: Any) -> None:
    op = start(server, steps=1000, intervalMs=50)
    page.goto(f"{server.url}/#/operations/{op['id']}")
    wait_for_status(page, "running")
    wait_for_seq(page, 5)
    assert page.is_disabled("#delete-button")

    page.click("#cancel-button")
    wait_for_status(page, "cancelled")
    events = assert_exactly_once(page, server, op["id"])
    types = [e["type"] for e in events]
    assert types.count("CancellationRequested") == 1
    assert types[-1] == "OperationCancelled"
    assert page.is_disabled("#cancel-button")
    assert not page.is_disabled("#delete-button")
    percent = float(page.get_attribute("#detail-bar", "aria-valuenow") or 0)
    assert percent < 100
    shoot(page, "detail-cancelled")

    # Delete asks twice, then the operation is gone from the API.
    page.click("#delete-button")
    assert page.inner_text("#delete-button") == "Confirm delete"
    page.click("#delete-button")
    page.wait_for_selector("#detail-missing:not([hidden])")
    assert httpx.get(f"{server.url}/operations/{op['id']}").status_code == 410
    assert page.is_disabled("#delete-button")


def test_bad_params_show_the_fields_error(page: Any, server: Any) -> None:
    open_form(page, server)
    page.fill("#param-steps", "0")
    page.fill("#param-intervalMs", "10")
    before = page.url
    page.click("#start-button")

    error = page.locator("#param-steps-error")
    error.wait_for()
    problem = httpx.post(
        f"{server.url}/operations",
        json={"kind": "demo.countdown", "params": {"steps": 0, "intervalMs": 10}},
    ).json()
    messages = [e["message"] for e in problem["errors"] if e.get("pointer") == "/params/steps"]
    assert messages and error.inner_text() == "; ".join(messages)
    assert page.get_attribute("#param-steps", "aria-invalid") == "true"
    assert "param-steps-error" in (page.get_attribute("#param-steps", "aria-describedby") or "")
    assert page.is_hidden("#param-intervalMs-error")
    assert page.url == before, "a refused start must not navigate away"
    assert page.evaluate("document.activeElement.id") == "param-steps"

    # Another kind, another field: the form follows the kind's schema.
    page.select_option("#kind", "demo.report")
    page.wait_for_selector("#param-year")
    assert page.is_hidden("#param-steps-error") if page.locator("#param-steps").count() else True
    page.fill("#param-year", "1800")
    page.click("#start-button")
    page.locator("#param-year-error").wait_for()
    assert page.inner_text("#param-year-error")

    # The raw JSON fallback shows the same message with the field's name.
    page.check("#raw-toggle")
    page.fill("#params-json", '{"reportType": "yearly-sales", "year": "soon"}')
    page.click("#start-button")
    raw_error = page.locator("#params-json-error")
    raw_error.wait_for()
    assert raw_error.inner_text().startswith("year:")
    page.fill("#params-json", "{not json")
    page.click("#start-button")
    page.wait_for_function(
        "document.getElementById('params-json-error').textContent.startsWith('Not valid JSON')"
    )
    assert httpx.get(f"{server.url}/operations").json()["items"] == []


def test_report_result_previews_as_a_table(page: Any, server: Any, shoot: Any) -> None:
    open_form(page, server)
    page.select_option("#kind", "demo.report")
    page.fill("#param-year", "2023")
    page.click("#start-button")
    page.wait_for_url(re.compile(r"#/operations/op_"))
    wait_for_status(page, "succeeded")
    page.wait_for_selector("#result-preview table th")
    assert "text/csv" in page.inner_text("#result-meta")
    assert page.locator("#result-preview tbody tr").count() > 0
    href = page.get_attribute("#result-download", "href")
    body = httpx.get(f"{server.url}{href}")
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/csv")
    shoot(page, "detail-report")


def test_list_pages_through_many_operations_and_adds_new_ones_live(
    browser: Any, server: Any, shoot: Any
) -> None:
    body = {"kind": "demo.countdown", "params": {"steps": 1, "intervalMs": 0}}
    with httpx.Client(base_url=server.url) as client:
        for _ in range(120):
            # 120 creations outrun the per-tenant create rate: wait as the 429 asks.
            response = client.post("/operations", json=body)
            while response.status_code == 429:
                time.sleep(int(response.headers["retry-after"]))
                response = client.post("/operations", json=body)
            assert response.is_success
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda error: errors.append(str(error)))
        pg.goto(f"{server.url}/")
        pg.wait_for_function("document.querySelectorAll('#ops-body tr').length === 50")
        assert pg.is_visible("#load-more")
        pg.click("#load-more")
        pg.wait_for_function("document.querySelectorAll('#ops-body tr').length === 100")
        pg.click("#load-more")
        pg.wait_for_function("document.querySelectorAll('#ops-body tr').length === 120")
        pg.wait_for_selector("#load-more", state="hidden")
        ids = pg.eval_on_selector_all("#ops-body tr", "rows => rows.map(r => r.dataset.id)")
        assert len(set(ids)) == 120

        # A new operation appears on top without a reload, and runs to the end there.
        op = start(server, steps=5, intervalMs=50)
        pg.wait_for_function(
            "id => document.querySelector('#ops-body tr')?.dataset.id === id", arg=op["id"]
        )
        pg.wait_for_function(
            "id => document.querySelector(`#ops-body tr[data-id='${id}']`).dataset.status"
            " === 'succeeded'",
            arg=op["id"],
            timeout=RUN_MS,
        )
        assert pg.get_attribute("#connection", "data-state") == "live"

        # Filtering asks the server.
        pg.select_option("#filter-status", "running")
        pg.wait_for_function("document.querySelectorAll('#ops-body tr').length === 0")
        assert pg.is_visible("#list-empty")
        pg.select_option("#filter-status", "")
        pg.wait_for_function("document.querySelectorAll('#ops-body tr').length === 50")
        assert errors == []
    finally:
        ctx.close()


def test_phone_width_and_dark_mode(browser: Any, server: Any, shoot: Any) -> None:
    op = start(server, steps=3, intervalMs=10)
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    try:
        pg = ctx.new_page()
        pg.goto(f"{server.url}/")
        pg.wait_for_selector(f"#ops-body tr[data-id='{op['id']}']")
        overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the list is {overflow}px wider than a phone"
        background = pg.evaluate("getComputedStyle(document.body).backgroundColor")
        red, green, blue = (int(x) for x in re.findall(r"\d+", background)[:3])
        assert red + green + blue < 150, f"dark mode should be dark, got {background}"
        shoot(pg, "list-phone-dark")
        pg.goto(f"{server.url}/#/operations/{op['id']}")
        pg.wait_for_selector("#detail-status[data-status='succeeded']")
        overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the detail view is {overflow}px wider than a phone"
        shoot(pg, "detail-phone-dark")
    finally:
        ctx.close()


def test_keyboard_and_screen_reader_labels(page: Any, server: Any) -> None:
    op = start(server, steps=2, intervalMs=10)
    page.goto(f"{server.url}/")
    page.wait_for_selector(f"#ops-body tr[data-id='{op['id']}'] a")
    page.keyboard.press("n")
    assert page.evaluate("document.activeElement.id") == "kind"

    # Tab to the operation's link and open it with Enter.
    page.focus(f"#ops-body tr[data-id='{op['id']}'] a")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"#/operations/"))
    wait_for_status(page, "succeeded")
    assert page.evaluate("document.activeElement.id") == "detail-heading"
    assert page.get_attribute("#detail-bar", "role") == "progressbar"
    assert page.get_attribute("#connection", "role") == "status"
    page.keyboard.press("Escape")
    page.wait_for_selector("#view-list:not([hidden])")
    label = page.get_attribute(f"#ops-body tr[data-id='{op['id']}'] a", "aria-label") or ""
    assert "succeeded" in label and op["id"] in label


def test_unknown_operation_says_so(page: Any, server: Any) -> None:
    page.goto(f"{server.url}/#/operations/op_DOESNOTEXIST")
    page.wait_for_selector("#detail-missing:not([hidden])")
    assert "no operation" in page.inner_text("#detail-missing").lower()


def test_server_restart_mid_operation_resumes_exactly_once(page: Any, server: Any) -> None:
    op = start(server, **SLOW)
    page.goto(f"{server.url}/#/operations/{op['id']}")
    wait_for_seq(page, 8)

    server.restart()  # kill -9 and start again on the same port and database
    wait_for_status(page, "succeeded")
    events = assert_exactly_once(page, server, op["id"])
    assert wait_for_connection(page, "live") == "live"
    # The worker died with the server: the history says so, and so does the timeline.
    assert "OperationRetried" in [e["type"] for e in events]


def test_deleted_operation_says_so_and_keeps_its_history(page: Any, server: Any) -> None:
    op = start(server, steps=2, intervalMs=0)
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/operations/{op['id']}").status_code != 303:
        assert time.monotonic() < deadline, "the operation did not succeed"
        time.sleep(0.1)
    assert httpx.delete(f"{server.url}/operations/{op['id']}").status_code == 204
    page.goto(f"{server.url}/#/operations/{op['id']}")
    page.wait_for_selector("#detail-missing:not([hidden])")
    assert "deleted" in page.inner_text("#detail-missing").lower()
    assert_exactly_once(page, server, op["id"])
    assert page.is_disabled("#cancel-button") and page.is_disabled("#delete-button")
    assert page.is_hidden("#result-card")
