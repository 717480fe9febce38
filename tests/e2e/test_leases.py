"""The HTTP worker protocol against a real server with no in-process workers.

The server knows the demo kinds but runs none (``OPSTREAM_CONCURRENCY=0``): every operation
is claimed and written through ``/leases`` here, as a worker in another language would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, start_server

from .helpers import countdown, history, wait_terminal

pytestmark = pytest.mark.e2e

KINDS = ["demo.countdown"]
CLIENT_A, WORKER_A = "client-token-of-acme-0001", "worker-token-of-acme-0001"
CLIENT_B, WORKER_B = "client-token-of-bolt-0001", "worker-token-of-bolt-0001"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path, OPSTREAM_CONCURRENCY="0", OPSTREAM_LEASE_SECONDS="1")
    try:
        yield server
    finally:
        server.stop()


def claim(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = client.post("/leases", json={"kinds": KINDS, "wait": 5, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_whole_attempt_claim_report_result_outcome(api: ServerProcess) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        operation_id = countdown(client, 3, 10)
        claimed = claim(client, worker="test", leaseSeconds=30)
        lease = claimed["lease"]
        assert claimed["operation"]["id"] == operation_id
        assert claimed["operation"]["status"] == "running" and lease["attempt"] == 1
        assert lease["expiresAt"].endswith("Z") and len(lease["id"]) > 40
        base = f"/leases/{lease['id']}"

        events = [
            {"type": "StageStarted", "message": "counting", "details": {"stage": "count"}},
            {"type": "ProgressUpdated", "details": {"percent": 50}},
            {"type": "FraudCheckStarted", "message": "checking", "details": {"score": 3}},
        ]
        reported = client.post(f"{base}/events", json={"events": events, "expectedSeq": 2})
        assert reported.status_code == 200, reported.text
        assert reported.json() == {"lastEventSeq": 5, "cancelRequested": False}

        # A retried report (its answer was lost) is refused, not written twice.
        again = client.post(f"{base}/events", json={"events": events, "expectedSeq": 2})
        assert again.status_code == 409
        assert again.json()["type"].endswith(":seq-conflict")
        assert again.json()["lastEventSeq"] == 5

        forged = client.post(f"{base}/events", json={"events": [{"type": "OperationSucceeded"}]})
        assert forged.status_code == 422
        assert forged.json()["type"].endswith(":reserved-event-type")
        bad = client.post(
            f"{base}/events", json={"events": [{"type": "ProgressUpdated", "details": {}}]}
        )
        assert bad.status_code == 400

        renewed = client.put(base, json={"leaseSeconds": 30})
        assert renewed.status_code == 200
        assert renewed.json()["cancelRequested"] is False

        csv = b"region,total\nnorth,12\n"
        put = client.put(f"{base}/result", content=csv, headers={"Content-Type": "text/csv"})
        assert put.status_code == 204
        done = client.post(f"{base}/outcome", json={"status": "succeeded"})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "succeeded"

        result = client.get(f"/operations/{operation_id}/result")
        assert result.content == csv and result.headers["content-type"].startswith("text/csv")
        types = [e["type"] for e in history(client, operation_id)]
        assert types == [
            "OperationQueued",
            "OperationStarted",
            "StageStarted",
            "ProgressUpdated",
            "FraudCheckStarted",
            "OperationSucceeded",
        ]

        # The operation is finished: every call on its lease is refused, nothing written.
        for method, path, body in [
            (
                "POST",
                f"{base}/events",
                {"events": [{"type": "ProgressUpdated", "details": {"percent": 1}}]},
            ),
            ("PUT", base, {}),
            ("POST", f"{base}/outcome", {"status": "failed"}),
            ("DELETE", base, None),
        ]:
            refused = client.request(method, path, json=body)
            assert refused.status_code == 409, (method, path, refused.text)
            assert refused.json()["type"].endswith(":lease-lost")
        assert len(history(client, operation_id)) == len(types)

        metrics = client.get("/metrics").text
        refused = [
            line
            for line in metrics.splitlines()
            if line.startswith("opstream_http_lease_refused_total")
        ]
        assert refused and float(refused[0].split()[-1]) >= 4, "an operator sees fenced writes"

        # A lease id for an operation that never existed holds nothing either.
        unknown = "op_00000000000000000000000000.1." + "x" * 32
        for method, path, body in [
            ("POST", f"/leases/{unknown}/events", {"events": [{"type": "StepDone"}]}),
            ("POST", f"/leases/{unknown}/outcome", {"status": "succeeded"}),
            ("POST", f"/leases/{unknown}/outcome", {"status": "failed"}),
            ("DELETE", f"/leases/{unknown}", None),
            ("PUT", f"/leases/{unknown}", {}),
        ]:
            refused = client.request(method, path, json=body)
            assert refused.status_code == 409, (method, path, refused.text)


def test_a_claim_waits_for_work_and_answers_204_when_none_comes(api: ServerProcess) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        started = time.monotonic()
        none = client.post("/leases", json={"kinds": KINDS, "wait": 0.5})
        assert none.status_code == 204
        assert 0.4 < time.monotonic() - started < 5

        def create_soon() -> None:
            time.sleep(0.5)
            countdown(client, 1, 1)

        threading.Thread(target=create_soon).start()
        started = time.monotonic()
        claimed = claim(client, wait=20)
        assert time.monotonic() - started < 3, "woken by the new operation, not the timeout"
        assert claimed["operation"]["kind"] == "demo.countdown"


def test_a_lease_that_ran_out_is_refused_and_the_operation_retried(api: ServerProcess) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        operation_id = countdown(client, 3, 10)
        first = claim(client, leaseSeconds=1)["lease"]
        time.sleep(2.5)  # past the lease: the server's recovery retries the operation
        late = client.post(
            f"/leases/{first['id']}/events",
            json={"events": [{"type": "ProgressUpdated", "details": {"percent": 10}}]},
        )
        assert late.status_code == 409 and late.json()["type"].endswith(":lease-lost")
        second = claim(client, leaseSeconds=30)
        assert second["operation"]["id"] == operation_id and second["lease"]["attempt"] == 2
        ok = client.post(f"/leases/{second['lease']['id']}/outcome", json={"status": "succeeded"})
        assert ok.status_code == 200
        late_end = client.post(f"/leases/{first['id']}/outcome", json={"status": "succeeded"})
        assert late_end.status_code == 409
        types = [e["type"] for e in history(client, operation_id)]
        assert types.count("OperationRetried") == 1 and types[-1] == "OperationSucceeded"
        assert sum(t in ("OperationSucceeded", "OperationFailed") for t in types) == 1


def test_cancel_reaches_the_worker_and_hand_back_spends_no_attempt(api: ServerProcess) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        operation_id = countdown(client, 3, 10)
        lease = claim(client, leaseSeconds=30)["lease"]
        assert client.delete(f"/leases/{lease['id']}").status_code == 204
        again = claim(client, leaseSeconds=30)
        assert again["lease"]["attempt"] == 2
        lease = again["lease"]
        assert client.post(f"/operations/{operation_id}/cancel").status_code == 202
        renewed = client.put(f"/leases/{lease['id']}", json={"leaseSeconds": 30})
        assert renewed.json()["cancelRequested"] is True
        reported = client.post(
            f"/leases/{lease['id']}/events",
            json={"events": [{"type": "ProgressUpdated", "details": {"percent": 5}}]},
        )
        assert reported.json()["cancelRequested"] is True
        done = client.post(f"/leases/{lease['id']}/outcome", json={"status": "cancelled"})
        assert done.json()["status"] == "cancelled"
        retried = [e for e in history(client, operation_id) if e["type"] == "OperationRetried"]
        assert [e["details"].get("handedBack") for e in retried] == [True]


def test_a_retryable_failure_is_retried_until_the_attempts_are_spent(api: ServerProcess) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        operation_id = countdown(client, 3, 10)
        failure = {"type": "UpstreamDown", "message": "the bank did not answer"}
        for attempt in (1, 2, 3):
            lease = claim(client, leaseSeconds=30)["lease"]
            assert lease["attempt"] == attempt
            outcome = {"status": "failed", "error": failure, "retry": True}
            done = client.post(f"/leases/{lease['id']}/outcome", json=outcome)
            assert done.status_code == 200
        document = wait_terminal(client, operation_id)
        assert document["status"] == "failed"
        assert document["error"]["type"] == "UpstreamDown"
        assert document["error"]["message"].startswith("the bank did not answer")
        retries = [e for e in history(client, operation_id) if e["type"] == "OperationRetried"]
        assert len(retries) == 2
        # The kind's policy: a backoff before each retry may be claimed, doubling.
        assert [e["details"]["retryDelayMs"] for e in retries] == [1000, 2000]


def test_worker_credentials_are_separate_and_per_tenant(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        OPSTREAM_CONCURRENCY="0",
        OPSTREAM_TOKENS=f"acme:{CLIENT_A},bolt:{CLIENT_B}",
        OPSTREAM_WORKER_TOKENS=f"acme:{WORKER_A},bolt:{WORKER_B}",
    )

    def as_(token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=server.url, timeout=30, headers=headers)

    try:
        with as_(CLIENT_A) as client, as_(WORKER_A) as worker_a, as_(WORKER_B) as worker_b:
            operation_id = countdown(client, 3, 10)
            refused = client.post("/leases", json={"kinds": KINDS})
            assert refused.status_code == 403, "a client token cannot claim"
            assert worker_a.get(f"/operations/{operation_id}").status_code == 401
            anonymous = httpx.post(f"{server.url}/leases", json={"kinds": KINDS})
            assert anonymous.status_code == 401

            assert worker_b.post("/leases", json={"kinds": KINDS}).status_code == 204
            lease = claim(worker_a)["lease"]
            theirs = worker_b.post(f"/leases/{lease['id']}/outcome", json={"status": "cancelled"})
            assert theirs.status_code == 409, "another tenant's worker holds nothing"
            mine = worker_a.post(f"/leases/{lease['id']}/outcome", json={"status": "succeeded"})
            assert mine.status_code == 200
            assert client.get(f"/operations/{operation_id}").status_code in (200, 303)
    finally:
        server.stop()


def test_a_kinds_timeout_holds_for_an_http_worker(api: ServerProcess) -> None:
    """A kind registered over HTTP with timeoutSeconds: the server fails an attempt that
    runs longer, and the worker's next call on its lease is refused."""
    with httpx.Client(base_url=api.url, timeout=30) as client:
        kind = {"paramsSchema": {"type": "object"}, "timeoutSeconds": 1}
        assert client.put("/kinds/team.slow", json=kind).status_code == 201
        created = client.post("/operations", json={"kind": "team.slow", "params": {}})
        operation_id = created.json()["id"]
        lease = claim(client, kinds=["team.slow"], leaseSeconds=60)["lease"]
        document = wait_terminal(client, operation_id, timeout=15)
        assert document["status"] == "failed" and document["error"]["type"] == "Timeout"
        late = client.post(f"/leases/{lease['id']}/outcome", json={"status": "succeeded"})
        assert late.status_code == 409


def test_a_claim_whose_worker_went_away_takes_nothing(api: ServerProcess) -> None:
    """A worker that gives up its long-poll (killed, timed out) must not be handed an
    operation nobody will run: that would cost the operation an attempt and a lease period."""
    with httpx.Client(base_url=api.url, timeout=30) as client:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{api.url}/leases", json={"kinds": KINDS, "wait": 5}, timeout=0.5)
        operation_id = countdown(client, 1, 1)
        time.sleep(1.5)
        assert client.get(f"/operations/{operation_id}").json()["status"] == "queued"


def test_handing_back_an_operation_being_cancelled_cancels_it(api: ServerProcess) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        operation_id = countdown(client, 3, 10)
        lease = claim(client, leaseSeconds=30)["lease"]
        assert client.post(f"/operations/{operation_id}/cancel").status_code == 202
        assert client.delete(f"/leases/{lease['id']}").status_code == 204
        assert client.get(f"/operations/{operation_id}").json()["status"] == "cancelled"
