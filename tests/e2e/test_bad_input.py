"""Every bad input gets a clear problem+json answer: never a 500, never a stack trace."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, start_server

from .helpers import countdown, wait_terminal

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server: ServerProcess = start_server(tmp_path_factory.mktemp("bad-input"))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield http
    finally:
        server.stop()


def problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert str(body["type"]).startswith("urn:opstream:problem:")
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def test_malformed_json_is_400(client: httpx.Client) -> None:
    body = problem(client.post("/operations", content=b"{not json"), 400)
    assert body["type"] == "urn:opstream:problem:invalid-json"


@pytest.mark.parametrize("content", [b"", b"[]", b"42", b'"text"', b"null"])
def test_a_body_that_is_not_an_object_is_400(client: httpx.Client, content: bytes) -> None:
    problem(client.post("/operations", content=content), 400)


def test_unknown_kind_is_422_naming_the_field(client: httpx.Client) -> None:
    body = problem(client.post("/operations", json={"kind": "nope", "params": {}}), 422)
    assert body["errors"] == [
        {"field": "kind", "pointer": "/kind", "message": body["errors"][0]["message"]}
    ]  # type: ignore[index]
    assert "demo.countdown" in str(body["detail"])


def test_missing_kind_is_422(client: httpx.Client) -> None:
    body = problem(client.post("/operations", json={"params": {}}), 422)
    assert body["errors"][0]["field"] == "kind"  # type: ignore[index]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"reportType": "yearly-sales", "year": "last"}, "params.year"),
        ({"reportType": "weekly", "year": 2023}, "params.reportType"),
        ({"reportType": "yearly-sales"}, "params.year"),
        ({"reportType": "yearly-sales", "year": 2023, "extra": 1}, "params"),
        ("not an object", "params"),
    ],
)
def test_params_failing_the_schema_are_422_naming_the_field(
    client: httpx.Client, params: object, field: str
) -> None:
    response = client.post("/operations", json={"kind": "demo.report", "params": params})
    body = problem(response, 422)
    assert body["type"] == "urn:opstream:problem:invalid-params"
    assert field in [e["field"] for e in body["errors"]]  # type: ignore[attr-defined]
    assert str(body["detail"]).startswith(field)


def test_bad_callback_urls_are_422_and_unknown_fields_400(client: httpx.Client) -> None:
    base = {"kind": "demo.countdown", "params": {"steps": 1, "intervalMs": 0}}
    for url in ("ftp://x.test/hook", "http://127.0.0.1/hook", "http://169.254.169.254/"):
        body = problem(client.post("/operations", json={**base, "callbackUrl": url}), 422)
        assert body["errors"][0]["field"] == "callbackUrl"  # type: ignore[index]
    problem(client.post("/operations", json={**base, "callbackUrl": 42}), 400)
    problem(client.post("/operations", json={**base, "colour": "red"}), 400)


def test_bodies_over_the_limit_are_413(client: httpx.Client) -> None:
    huge = b'{"kind": "demo.countdown", "params": {"pad": "' + b"x" * (1024 * 1024) + b'"}}'
    problem(client.post("/operations", content=huge), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(20):
            yield b" " * 100_000

    problem(client.post("/operations", content=chunks()), 413)


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    for path in (
        "/operations/op_nope",
        "/operations/op_nope/events",
        "/operations/op_nope/events/stream",
        "/operations/op_nope/result",
    ):
        body = problem(client.get(path), 404)
        assert body["type"] == "urn:opstream:problem:operation-not-found"
    problem(client.delete("/operations/op_nope"), 404)
    problem(client.delete("/operations/op_nope/result"), 404)


def test_unknown_routes_and_methods_are_problems_too(client: httpx.Client) -> None:
    problem(client.get("/no/such/thing"), 404)
    problem(client.put("/operations"), 405)


@pytest.mark.parametrize("cursor", ["banana", "-1", "1.5", "99999999999999999999999", "0x10"])
def test_cursors_that_are_not_whole_numbers_are_400(client: httpx.Client, cursor: str) -> None:
    operation_id = countdown(client, 1, 0)
    wait_terminal(client, operation_id)
    for path in (
        f"/operations/{operation_id}/events?after={cursor}",
        f"/operations/{operation_id}/events/stream?after={cursor}",
        f"/events?after={cursor}",
        f"/events/stream?after={cursor}",
    ):
        body = problem(client.get(path), 400)
        assert body["type"] == "urn:opstream:problem:invalid-cursor"
    stream = f"/operations/{operation_id}/events/stream"
    problem(client.get(stream, headers={"Last-Event-ID": cursor}), 400)


def test_cursors_in_the_future_are_400(client: httpx.Client) -> None:
    operation_id = countdown(client, 1, 0)
    doc = wait_terminal(client, operation_id)
    future = doc["lastEventSeq"] + 1
    body = problem(client.get(f"/operations/{operation_id}/events?after={future}"), 400)
    assert "future" in str(body["detail"])
    problem(
        client.get(
            f"/operations/{operation_id}/events/stream", headers={"Last-Event-ID": str(future)}
        ),
        400,
    )
    head = client.get("/healthz").json()["head"]
    problem(client.get(f"/events?after={head + 1000}"), 400)
    problem(client.get("/events/stream", headers={"Last-Event-ID": str(head + 1000)}), 400)


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=x", "limit=-5", "wait=61", "wait=soon", "status=bogus", "cursor=nope"],
)
def test_bad_query_parameters_are_400(client: httpx.Client, query: str) -> None:
    path = "/operations?" + query if query.split("=")[0] in ("status", "cursor") else None
    operation_id = countdown(client, 1, 0)
    path = path or f"/operations/{operation_id}/events?{query}"
    problem(client.get(path), 400)


def test_huge_limits_are_clamped_not_refused(client: httpx.Client) -> None:
    operation_id = countdown(client, 1, 0)
    wait_terminal(client, operation_id)
    response = client.get(f"/operations/{operation_id}/events?limit=1000000000")
    assert response.status_code == 200 and len(response.json()) == 4
    assert client.get("/operations?limit=1000000000").status_code == 200


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"kind": "demo.countdown", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
         "nested"),
        (b'{"kind": "demo.countdown", "params": {"steps": 1, "intervalMs": 0, "x": "\xff\xfe"}}',
         "UTF-8"),
        (b'{"kind": "demo.countdown", "params": {"steps": 1' + b"0" * 40 + b', "intervalMs": 0}}',
         "64 bits"),
        (b'{"kind": "demo.countdown", "kind": "demo.report", "params": {}}', "twice"),
        (b'{"kind": "demo.countdown", "params": {"steps": NaN, "intervalMs": 0}}', "NaN"),
    ],
)  # fmt: skip
def test_hostile_json_is_refused_clearly(client: httpx.Client, content: bytes, reason: str) -> None:
    body = problem(client.post("/operations", content=content), 400)
    assert reason in str(body["detail"])


@pytest.mark.parametrize("cursor", ["-1", "99999999999999999999", "abc", "1e3", "0x1", "5 5"])
def test_forged_last_event_ids_are_400(client: httpx.Client, cursor: str) -> None:
    operation_id = countdown(client, 1, 0)
    wait_terminal(client, operation_id)
    for path in (f"/operations/{operation_id}/events/stream", "/events/stream"):
        problem(client.get(path, headers={"Last-Event-ID": cursor}), 400)
