"""Cancel without losing output (DESIGN.md): ``POST /operations/{id}/cancel`` only ever
cancels, and both DELETEs honour ``If-Match``.

Bug: a client meaning "stop it" read the status, then sent ``DELETE``; an operation that
finished in between had its result deleted (the history ended ``OperationSucceeded,
ResultDeleted``), and a retried ``DELETE`` could delete a cancelled operation's output.
Fix: the cancel resource never deletes (``409`` naming the status once the operation
succeeded or failed), and ``If-Match: "<seq>"`` makes a DELETE conditional (``412``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server
from tests.e2e.helpers import countdown, history, wait_terminal

pytestmark = pytest.mark.e2e

RACES = 40  # cancels sent as an operation finishes: each must cancel it or change nothing


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = start_server(tmp_path_factory.mktemp("cancel"))
    try:
        with httpx.Client(base_url=server.url, timeout=15) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[httpx.Client]:
    """A server that runs nothing: operations stay queued."""
    server: ServerProcess = start_server(tmp_path, OPSTREAM_CONCURRENCY="0")
    try:
        with httpx.Client(base_url=server.url, timeout=15) as client:
            yield client
    finally:
        server.stop()


def types(client: httpx.Client, operation_id: str) -> list[str]:
    return [event["type"] for event in history(client, operation_id)]


def test_cancel_stops_a_running_operation_and_asking_again_is_200(api: httpx.Client) -> None:
    running = countdown(api, 100, 100)
    first = api.post(f"/operations/{running}/cancel")
    assert first.status_code == 202, first.text
    assert first.json()["status"] in ("cancelling", "cancelled")
    again = api.post(f"/operations/{running}/cancel")
    assert again.status_code == 200 and again.json()["status"] in ("cancelling", "cancelled")
    assert wait_terminal(api, running)["status"] == "cancelled"
    assert api.post(f"/operations/{running}/cancel").status_code == 200
    assert types(api, running).count("CancellationRequested") == 1


def test_cancel_of_a_queued_operation_cancels_it_at_once(idle: httpx.Client) -> None:
    queued = countdown(idle, 3, 10)
    response = idle.post(f"/operations/{queued}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert types(idle, queued)[-2:] == ["CancellationRequested", "OperationCancelled"]


def test_cancel_of_a_succeeded_operation_is_409_and_keeps_the_result(api: httpx.Client) -> None:
    done = countdown(api, 1, 1)
    assert wait_terminal(api, done)["status"] == "succeeded"
    refused = api.post(f"/operations/{done}/cancel")
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["operationStatus"] == "succeeded"
    assert api.get(f"/operations/{done}/result").json() == {"steps": 1}
    assert "ResultDeleted" not in types(api, done)


def test_cancel_of_unknown_or_deleted_operations(api: httpx.Client) -> None:
    assert api.post("/operations/op_01JDX3AAAAAAAAAAAAAAAAAAAA/cancel").status_code == 404
    done = countdown(api, 1, 1)
    wait_terminal(api, done)
    assert api.delete(f"/operations/{done}").status_code == 204
    assert api.post(f"/operations/{done}/cancel").status_code == 410


def test_a_delete_with_a_stale_if_match_is_412_and_changes_nothing(api: httpx.Client) -> None:
    done = countdown(api, 2, 1)
    final = wait_terminal(api, done)
    stale = f'"{final["lastEventSeq"] - 1}"'
    for path in (f"/operations/{done}", f"/operations/{done}/result"):
        refused = api.delete(path, headers={"If-Match": stale})
        assert refused.status_code == 412, refused.text
        assert refused.json()["lastEventSeq"] == final["lastEventSeq"]
    assert "ResultDeleted" not in types(api, done)
    current = f'"{final["lastEventSeq"]}"'
    assert (
        api.delete(f"/operations/{done}/result", headers={"If-Match": current}).status_code == 204
    )
    moved = api.delete(f"/operations/{done}", headers={"If-Match": current})
    assert moved.status_code == 412, "the result's deletion moved the operation on"


def test_an_if_match_that_is_not_an_etag_is_400_and_changes_nothing(api: httpx.Client) -> None:
    """An empty or unquoted If-Match is a client's mistake (a missing ETag pasted in), not
    a precondition that merely failed: 400, so it is not mistaken for "the operation moved"."""
    done = countdown(api, 1, 1)
    wait_terminal(api, done)
    for value in ("", "17", '"17', "W/17"):
        for path in (f"/operations/{done}", f"/operations/{done}/result"):
            refused = api.delete(path, headers={"If-Match": value})
            assert refused.status_code == 400, (value, refused.text)
            assert refused.json()["field"] == "If-Match"
    assert "ResultDeleted" not in types(api, done)
    assert api.delete(f"/operations/{done}", headers={"If-Match": "*"}).status_code == 204


def test_cancel_racing_completion_never_deletes_a_result(api: httpx.Client) -> None:
    rng = random.Random(14)
    outcomes: dict[str, int] = {}
    for _ in range(RACES):
        racing = countdown(api, 2, rng.choice([0, 1, 2, 5]))
        time.sleep(rng.uniform(0, 0.02))  # land the cancel anywhere around the end
        answer = api.post(f"/operations/{racing}/cancel")
        assert answer.status_code in (200, 202, 409), answer.text
        final = wait_terminal(api, racing)
        outcomes[final["status"]] = outcomes.get(final["status"], 0) + 1
        assert "ResultDeleted" not in types(api, racing)
        if final["status"] == "succeeded":
            # Refused (409), or requested (202) as the handler returned: the work is kept.
            assert api.get(f"/operations/{racing}/result").status_code == 200
        else:
            assert final["status"] == "cancelled" and answer.status_code in (200, 202)
    assert sum(outcomes.values()) == RACES
