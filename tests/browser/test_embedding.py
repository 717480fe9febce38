"""The dashboard of an opstream mounted under ``/lro`` (docs/embedding.md), in Chromium.

Bug: index.html loaded ``/static/...`` and the scripts called ``/operations``, ``/kinds``
and ``/events/stream`` at the origin's root: mounted, the page came up blank and every
call answered 404. Fix: assets and API calls resolve against the folder index.html was
served from.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import RUN_MS, STEP_MS
from tests.uvicorn_servers import UvicornProcess, start_example

pytestmark = pytest.mark.browser


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[UvicornProcess]:
    process = start_example(tmp_path)
    try:
        yield process
    finally:
        process.stop()


def test_the_dashboard_runs_an_operation_under_the_mount_path(
    page: Any, embedded: UvicornProcess
) -> None:
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    outside: list[str] = []  # every request the page makes must stay under /lro/
    page.on(
        "request",
        lambda r: None if r.url.startswith(embedded.url + "/") else outside.append(r.url),
    )
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)

    page.goto(f"{embedded.url}/")
    page.wait_for_selector("#kind option[value='demo.countdown']", state="attached")
    page.wait_for_selector("#param-steps")
    page.select_option("#kind", "demo.countdown")
    page.fill("#param-steps", "10")
    page.fill("#param-intervalMs", "50")
    page.click("#start-button")

    page.wait_for_url(re.compile(r"/lro/#/operations/op_"), timeout=STEP_MS)
    op_id = page.url.split("#/operations/")[1]
    page.wait_for_selector("#detail-status[data-status='succeeded']", timeout=RUN_MS)
    events = httpx.get(f"{embedded.url}/operations/{op_id}/events").json()
    assert events[-1]["type"] == "OperationSucceeded"
    page.wait_for_selector(f"#timeline li[data-seq='{events[-1]['seq']}']", state="attached")
    seqs = page.eval_on_selector_all(
        "#timeline li", "items => items.map(li => Number(li.dataset.seq))"
    )
    assert seqs == [event["seq"] for event in events]  # every event, once, in order
    page.wait_for_selector("#result-preview .json-key")
    assert page.get_attribute("#result-download", "href") == f"/lro/operations/{op_id}/result"

    page.click(".back-link")
    page.locator(f"#ops-body tr[data-id='{op_id}'][data-status='succeeded']").wait_for()

    assert outside == [], "requests outside the mount path"
    assert failed == [], "requests that failed"
    assert console_errors == [], "console errors"
