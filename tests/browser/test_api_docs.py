"""``/docs`` in a real Chromium: Swagger UI renders the whole description from the files
the server ships, with no console error and no request leaving the server."""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.conftest import STEP_MS


def test_the_api_docs_render_every_operation_without_errors(page: Any, server: Any) -> None:
    console_errors: list[str] = []
    elsewhere: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(server.url) else elsewhere.append(request.url)
        ),
    )
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=STEP_MS)
    paths = {
        text.strip().replace("\u200b", "")
        for text in page.locator(".opblock-summary-path").all_inner_texts()
    }
    document = httpx.get(server.url + "/openapi.json").json()
    assert set(document["paths"]) <= paths
    # Every operation, and the webhook opstream sends, has its block.
    described = [*document["paths"].values(), *document["webhooks"].values()]
    assert page.locator(".opblock").count() == sum(
        1 for item in described for method in item if method != "parameters"
    )
    assert "opstream" in page.locator(".info .title").inner_text()
    assert console_errors == []
    assert elsewhere == []
