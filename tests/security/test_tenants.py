"""Tenants and tokens against a real server: every resource is scoped to its tenant."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server
from tests.e2e.helpers import read_sse, wait_terminal

pytestmark = pytest.mark.e2e

ACME = "acme-token-0123456789"
BETA = "beta-token-0123456789"
COUNTDOWN = {"kind": "demo.countdown", "params": {"steps": 2, "intervalMs": 10}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("tenants"),
        OPSTREAM_TOKENS=f"acme:{ACME},beta:{BETA}",
        OPSTREAM_POLL_RATE="2",
        OPSTREAM_MAX_IN_FLIGHT="1000",
        # The 100-parallel-POSTs test is about idempotency, not the create rate.
        OPSTREAM_CREATE_RATE="1000",
    )
    try:
        yield process
    finally:
        process.stop()


def client_for(server: ServerProcess, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


@pytest.fixture
def acme(server: ServerProcess) -> Iterator[httpx.Client]:
    with client_for(server, ACME) as client:
        yield client


@pytest.fixture
def beta(server: ServerProcess) -> Iterator[httpx.Client]:
    with client_for(server, BETA) as client:
        yield client


def create(client: httpx.Client, body: dict[str, object] = COUNTDOWN, **headers: str) -> str:
    response = client.post("/operations", json=body, headers=headers)
    assert response.status_code == 202, response.text
    operation_id: str = response.json()["id"]
    return operation_id


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", "Basic YWNtZTp4", "Bearer", f"bearer {ACME}x"],
)
def test_without_a_valid_token_every_resource_is_401(
    server: ServerProcess, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=server.url, headers=headers) as anonymous:
        for method, path in [("GET", "/operations"), ("POST", "/operations"),
                             ("GET", "/operations/op_x"), ("GET", "/events"),
                             ("GET", "/events/stream"), ("GET", "/kinds"),
                             ("POST", "/stream-tokens")]:  # fmt: skip
            response = anonymous.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-type"] == "application/problem+json"
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/").status_code == 200, "the dashboard page itself is public"


def test_another_tenants_operation_does_not_exist(acme: httpx.Client, beta: httpx.Client) -> None:
    operation_id = create(acme)
    wait_terminal(acme, operation_id)
    for path in ("", "/events", "/events/stream", "/result"):
        response = beta.get(f"/operations/{operation_id}{path}")
        assert response.status_code == 404, path
        assert response.json()["type"] == "urn:opstream:problem:operation-not-found"
    assert beta.delete(f"/operations/{operation_id}").status_code == 404
    assert beta.delete(f"/operations/{operation_id}/result").status_code == 404
    assert operation_id not in {op["id"] for op in beta.get("/operations").json()["items"]}
    assert operation_id in {op["id"] for op in acme.get("/operations").json()["items"]}
    feed = beta.get("/events?limit=1000").json()
    assert all(event["operationId"] != operation_id for event in feed)
    assert acme.get(f"/operations/{operation_id}").status_code == 303


def test_the_global_stream_carries_only_the_tenants_events(
    acme: httpx.Client, beta: httpx.Client
) -> None:
    head = acme.get("/healthz").json()["head"]
    theirs = create(beta)
    ours = create(acme)
    wait_terminal(acme, ours)
    wait_terminal(beta, theirs)
    frames = read_sse(acme, f"/events/stream?after={head}", stop_after=5)
    assert {frame["data"]["operationId"] for frame in frames} == {ours}


def test_stream_tokens_reach_one_operation_and_nothing_else(
    server: ServerProcess, acme: httpx.Client, beta: httpx.Client
) -> None:
    operation_id, other = create(acme), create(acme)
    wait_terminal(acme, operation_id)
    issued = acme.post("/stream-tokens", json={"operationId": operation_id})
    assert issued.status_code == 201
    token = issued.json()["token"]
    assert issued.json()["stream"].endswith(f"access_token={token}")
    with client_for(server, None) as anonymous:
        stream = f"/operations/{operation_id}/events/stream?access_token={token}"
        frames = read_sse(anonymous, stream)
        assert frames[-1]["event"] == "OperationSucceeded"
        events = anonymous.get(f"/operations/{operation_id}/events?access_token={token}")
        assert events.status_code == 200
        # The token reads; it does not act, and it reaches nothing else.
        assert anonymous.get(f"/operations/{operation_id}?access_token={token}").status_code == 401
        assert (
            anonymous.delete(f"/operations/{operation_id}?access_token={token}").status_code == 401
        )
        assert anonymous.get(f"/operations/{other}/events?access_token={token}").status_code == 404
        assert anonymous.get(f"/events?access_token={token}").status_code == 403
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert (
            anonymous.get(f"/operations/{operation_id}/events?access_token={forged}").status_code
            == 401
        )
        garbage = anonymous.get(f"/operations/{operation_id}/events?access_token=not.a-token")
        assert garbage.status_code == 401
    assert beta.post("/stream-tokens", json={"operationId": operation_id}).status_code == 404


def test_a_feed_stream_token_reads_the_tenants_feed(
    server: ServerProcess, acme: httpx.Client
) -> None:
    token = acme.post("/stream-tokens").json()["token"]
    with client_for(server, None) as anonymous:
        response = anonymous.get(f"/events?access_token={token}")
        assert response.status_code == 200 and isinstance(response.json(), list)


def test_stream_tokens_expire(tmp_path: Path) -> None:
    from opstream.app.http.auth import StreamTokens
    from opstream.app.runtime.tenants import Unauthenticated

    tokens = StreamTokens(b"k" * 32, ttl=-1)
    token, _ = tokens.issue("acme", "op_1")
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.check(token)
    other = StreamTokens(b"j" * 32)
    with pytest.raises(Unauthenticated):
        other.check(StreamTokens(b"k" * 32).issue("acme", None)[0])


def test_idempotency_key_makes_a_post_safe_to_retry(acme: httpx.Client, beta: httpx.Client) -> None:
    first = acme.post("/operations", json=COUNTDOWN, headers={"Idempotency-Key": "order-1"})
    again = acme.post("/operations", json=COUNTDOWN, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202
    assert first.headers["location"] == again.headers["location"]
    assert first.json() == again.json(), "the same response, body included"
    assert again.headers["idempotent-replayed"] == "true"
    different = {"kind": "demo.countdown", "params": {"steps": 3, "intervalMs": 10}}
    changed = acme.post("/operations", json=different, headers={"Idempotency-Key": "order-1"})
    assert changed.status_code == 422
    assert changed.json()["type"] == "urn:opstream:problem:idempotency-key-reused"
    # Keys are per tenant: beta's "order-1" is its own.
    theirs = beta.post("/operations", json=COUNTDOWN, headers={"Idempotency-Key": "order-1"})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("key", ["", "x" * 256])
def test_bad_idempotency_keys_are_400(acme: httpx.Client, key: str) -> None:
    response = acme.post("/operations", json=COUNTDOWN, headers={"Idempotency-Key": key})
    assert response.status_code == 400


def test_a_repeated_idempotency_header_is_400(acme: httpx.Client) -> None:
    response = acme.post(
        "/operations",
        json=COUNTDOWN,
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert response.status_code == 400


def test_a_hundred_parallel_posts_with_one_key_create_one_operation(
    server: ServerProcess,
) -> None:
    def post(_: int) -> httpx.Response:
        with client_for(server, ACME) as client:
            return client.post("/operations", json=COUNTDOWN,
                               headers={"Idempotency-Key": "parallel-1"})  # fmt: skip

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(post, range(100)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1


def test_polling_faster_than_retry_after_gets_429_but_a_polite_client_never_does(
    acme: httpx.Client,
) -> None:
    slow = create(acme, {"kind": "demo.countdown", "params": {"steps": 6, "intervalMs": 1000}})
    statuses = [acme.get(f"/operations/{slow}").status_code for _ in range(20)]
    assert 429 in statuses
    refused = acme.get(f"/operations/{slow}")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    polite = create(acme, {"kind": "demo.countdown", "params": {"steps": 3, "intervalMs": 1000}})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        response = acme.get(f"/operations/{polite}")
        assert response.status_code in (200, 303), response.text
        if "retry-after" not in response.headers:
            break
        time.sleep(int(response.headers["retry-after"]))
    acme.delete(f"/operations/{slow}")
