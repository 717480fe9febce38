"""CORS: off by default; with an allow-list, preflights answer and scripts can read the
headers the API's recipes rely on (``Location``, ``ETag``, ``Retry-After``, ``Link``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opstream.app.http.cors import check_origin
from tests.conftest import ServerProcess, start_server
from tests.e2e.helpers import countdown, wait_terminal

pytestmark = pytest.mark.e2e
ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("cors"), OPSTREAM_CORS_ORIGINS=f"{ALLOWED},http://localhost:3000"
    )
    try:
        yield process
    finally:
        process.stop()


def preflight(url: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def test_a_preflight_from_an_allowed_origin_is_answered(cors_server: ServerProcess) -> None:
    response = preflight(cors_server.url + "/operations", ALLOWED)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key"):
        assert header in allowed
    assert int(response.headers["access-control-max-age"]) > 0


def test_a_preflight_for_a_conditional_delete_is_answered(cors_server: ServerProcess) -> None:
    response = httpx.options(
        cors_server.url + "/operations/op_01JDX3AAAAAAAAAAAAAAAAAAAA",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "if-match",
        },
    )
    assert response.status_code == 200
    assert "DELETE" in response.headers["access-control-allow-methods"]


def test_a_preflight_from_another_origin_is_refused(cors_server: ServerProcess) -> None:
    response = preflight(cors_server.url + "/operations", OTHER)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_scripts_can_read_location_etag_retry_after_and_link(cors_server: ServerProcess) -> None:
    with httpx.Client(base_url=cors_server.url, headers={"Origin": ALLOWED}) as client:
        created = client.post(
            "/operations", json={"kind": "demo.countdown", "params": {"steps": 3, "intervalMs": 1}}
        )
        assert created.status_code == 202
        assert created.headers["access-control-allow-origin"] == ALLOWED
        exposed = {
            h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")
        }
        assert {"location", "etag", "retry-after", "link"} <= exposed
        assert {
            "stream-next-offset",
            "stream-up-to-date",
            "stream-cursor",
            "stream-closed",
        } <= exposed
        # Errors are readable too: a problem without the header would be opaque to a page.
        missing = client.get("/operations/op_01JDX3AAAAAAAAAAAAAAAAAAAA")
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == ALLOWED


def test_a_not_modified_status_carries_the_cors_headers(cors_server: ServerProcess) -> None:
    with httpx.Client(base_url=cors_server.url, headers={"Origin": ALLOWED}) as client:
        # Answered before routing (the NotModified middleware), inside the CORS one.
        doc = wait_terminal(client, countdown(client, 1, 0))
        unchanged = client.get(
            f"/operations/{doc['id']}", headers={"If-None-Match": f'"{doc["lastEventSeq"]}"'}
        )
        assert unchanged.status_code == 304
        assert unchanged.headers["access-control-allow-origin"] == ALLOWED


def test_another_origin_gets_no_cors_headers(cors_server: ServerProcess) -> None:
    response = httpx.get(cors_server.url + "/kinds", headers={"Origin": OTHER})
    assert response.status_code == 200  # CORS is the browser's rule: the server still answers
    assert "access-control-allow-origin" not in response.headers


def test_cors_is_off_by_default(server: ServerProcess) -> None:
    response = preflight(server.url + "/operations", ALLOWED)
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers
    plain = httpx.get(server.url + "/kinds", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in plain.headers


@pytest.mark.parametrize(
    "origin", ["https://app.example.com/", "app.example.com", "https://a.example/x", "ftp://a"]
)
def test_a_value_that_is_not_an_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        check_origin(origin)


def test_the_server_refuses_to_start_with_a_bad_origin(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not an origin"):
        start_server(tmp_path, OPSTREAM_CORS_ORIGINS="https://app.example.com/")


def test_the_flag_may_be_repeated() -> None:
    from opstream.app.cli.main import build_parser, settings_from

    args = build_parser().parse_args(
        ["serve", "--cors-origin", ALLOWED, "--cors-origin", "http://localhost:3000"]
    )
    assert settings_from(args).cors_origins == (ALLOWED, "http://localhost:3000")
