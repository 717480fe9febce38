"""The HTTP API against a real server process: statuses, caching, long-polls, streams."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import ServerProcess

from .helpers import countdown, history, read_sse, start, wait_terminal

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http  # type: ignore[misc]


def test_create_answers_202_with_location_and_links(client: httpx.Client) -> None:
    response = client.post(
        "/operations", json={"kind": "demo.countdown", "params": {"steps": 1, "intervalMs": 0}}
    )
    assert response.status_code == 202
    doc = response.json()
    assert response.headers["location"] == f"/operations/{doc['id']}" == doc["links"]["self"]
    assert doc["id"].startswith("op_") and doc["status"] == "queued" and doc["lastEventSeq"] == 1
    assert doc["links"]["stream"] == f"/operations/{doc['id']}/events/stream"
    assert response.headers["etag"] == '"1"'


def test_status_while_running_has_progress_etag_and_retry_after(client: httpx.Client) -> None:
    operation_id = countdown(client, 40, 100)
    time.sleep(0.6)
    response = client.get(f"/operations/{operation_id}")
    assert response.status_code == 200
    doc = response.json()
    assert doc["status"] == "running" and doc["startedAt"] is not None
    assert 0 < doc["progress"]["percent"] < 100
    assert doc["progress"]["estimatedTimeRemaining"] > 0
    assert response.headers["etag"] == f'"{doc["lastEventSeq"]}"'
    assert 1 <= int(response.headers["retry-after"]) <= 30
    same = client.get(f"/operations/{operation_id}", headers={"If-None-Match": '"1"'})
    assert same.status_code == 200, "a stale ETag gets the fresh document"
    client.delete(f"/operations/{operation_id}")


def test_if_none_match_costs_a_304(client: httpx.Client) -> None:
    operation_id = countdown(client, 1, 0)
    doc = wait_terminal(client, operation_id)
    unchanged = client.get(
        f"/operations/{operation_id}", headers={"If-None-Match": f'"{doc["lastEventSeq"]}"'}
    )
    assert unchanged.status_code == 304 and unchanged.content == b""


def test_wait_holds_the_status_until_something_changes(client: httpx.Client) -> None:
    operation_id = countdown(client, 3, 700)
    first = client.get(f"/operations/{operation_id}")
    etag = first.headers["etag"]
    began = time.monotonic()
    changed = client.get(f"/operations/{operation_id}?wait=10", headers={"If-None-Match": etag})
    took = time.monotonic() - began
    assert changed.status_code in (200, 303) and changed.headers["etag"] != etag
    assert took < 5, "the answer came when the status changed, not at the deadline"
    done = wait_terminal(client, operation_id)
    began = time.monotonic()
    still = client.get(
        f"/operations/{operation_id}?wait=5", headers={"If-None-Match": f'"{done["lastEventSeq"]}"'}
    )
    assert still.status_code == 304 and time.monotonic() - began < 2, (
        "a terminal status won't change"
    )


def test_success_redirects_to_a_result_that_can_be_fetched_again(client: httpx.Client) -> None:
    operation_id = countdown(client, 2, 0)
    wait_terminal(client, operation_id)
    status = client.get(f"/operations/{operation_id}")
    assert status.status_code == 303
    assert status.headers["location"] == f"/operations/{operation_id}/result"
    assert status.json()["status"] == "succeeded", "the 303's body is the status document"
    for _ in range(2):
        result = client.get(f"/operations/{operation_id}/result")
        assert result.status_code == 200 and result.json() == {"steps": 2}


def test_result_of_an_unfinished_operation_is_409(client: httpx.Client) -> None:
    operation_id = countdown(client, 50, 100)
    response = client.get(f"/operations/{operation_id}/result")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["operationStatus"] in ("queued", "running")
    client.delete(f"/operations/{operation_id}")


def test_cancel_a_running_operation(client: httpx.Client) -> None:
    operation_id = countdown(client, 100, 50)
    time.sleep(0.3)
    response = client.delete(f"/operations/{operation_id}")
    assert response.status_code == 202 and response.json()["status"] in ("cancelling", "cancelled")
    doc = wait_terminal(client, operation_id)
    assert doc["status"] == "cancelled"
    types = [e["type"] for e in history(client, operation_id)]
    assert types.count("CancellationRequested") == 1 and types[-1] == "OperationCancelled"
    assert client.get(f"/operations/{operation_id}").status_code == 200


def test_cancel_a_queued_operation_ends_it_at_once(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.conftest import start_server

    api_only = start_server(tmp_path_factory.mktemp("api"), OPSTREAM_CONCURRENCY="0")
    try:
        with httpx.Client(base_url=api_only.url) as http:
            operation_id = countdown(http, 1, 0)
            response = http.delete(f"/operations/{operation_id}")
            assert response.status_code == 202 and response.json()["status"] == "cancelled"
            types = [e["type"] for e in history(http, operation_id)]
            assert types == ["OperationQueued", "CancellationRequested", "OperationCancelled"]
    finally:
        api_only.stop()


def test_deleting_a_finished_operation_makes_it_gone(client: httpx.Client) -> None:
    operation_id = countdown(client, 1, 0)
    wait_terminal(client, operation_id)
    assert client.delete(f"/operations/{operation_id}").status_code == 204
    gone = client.get(f"/operations/{operation_id}")
    assert gone.status_code == 410
    assert gone.json()["operation"]["status"] == "succeeded"
    assert client.get(f"/operations/{operation_id}/result").status_code == 410
    assert client.delete(f"/operations/{operation_id}").status_code == 410
    assert history(client, operation_id)[-1]["type"] == "ResultDeleted", "the history stays"


def test_deleting_only_the_result(client: httpx.Client) -> None:
    operation_id = countdown(client, 1, 0)
    wait_terminal(client, operation_id)
    assert client.delete(f"/operations/{operation_id}/result").status_code == 204
    assert client.get(f"/operations/{operation_id}/result").status_code == 410
    status = client.get(f"/operations/{operation_id}")
    assert status.status_code == 200 and status.json()["result"] is None


def test_a_failing_handler_fails_the_operation_with_a_readable_message(
    client: httpx.Client,
) -> None:
    operation_id = countdown(client, 5, 0, failAt=3)
    doc = wait_terminal(client, operation_id)
    assert doc["status"] == "failed"
    assert doc["error"] == {
        "type": "HandlerError",
        "message": "failed at step 3 of 5, as asked by failAt",
    }
    assert "Traceback" not in str(history(client, operation_id))
    assert client.get(f"/operations/{operation_id}").status_code == 200


def test_replay_pages_with_link_next_and_long_polls(client: httpx.Client) -> None:
    operation_id = countdown(client, 10, 0)
    wait_terminal(client, operation_id)
    page = client.get(f"/operations/{operation_id}/events?after=3&limit=4")
    assert [e["seq"] for e in page.json()] == [4, 5, 6, 7]
    assert page.links["next"]["url"].endswith(f"/operations/{operation_id}/events?limit=4&after=7")
    everything = history(client, operation_id)
    assert [e["seq"] for e in everything] == list(range(1, 14))  # queued, started, 10, end
    event = everything[0]
    assert set(event) >= {
        "id",
        "operationId",
        "seq",
        "position",
        "type",
        "message",
        "happenedAt",
        "details",
    }
    assert event["id"] == f"{operation_id}:1" and event["happenedAt"].endswith("Z")
    last = client.get(f"/operations/{operation_id}/events?after=13")
    assert last.json() == [] and "link" not in last.headers

    slow = countdown(client, 2, 800)
    time.sleep(0.2)
    known = client.get(f"/operations/{slow}").json()["lastEventSeq"]
    began = time.monotonic()
    newer = client.get(f"/operations/{slow}/events?after={known}&wait=10").json()
    assert newer and newer[0]["seq"] == known + 1 and time.monotonic() - began < 5


def test_stream_is_live_and_ends_after_the_terminal_event(client: httpx.Client) -> None:
    operation_id = countdown(client, 8, 50)
    frames = read_sse(client, f"/operations/{operation_id}/events/stream")
    # queued, started, one progress per step, succeeded
    assert [int(f["id"]) for f in frames] == list(range(1, 12))
    assert [f["data"]["seq"] for f in frames] == list(range(1, 12))
    assert frames[-1]["event"] == "OperationSucceeded"
    assert all(f["event"] == f["data"]["type"] for f in frames)


def test_stream_headers_for_proxies(client: httpx.Client) -> None:
    operation_id = countdown(client, 1, 0)
    with client.stream("GET", f"/operations/{operation_id}/events/stream") as response:
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        first = next(response.iter_lines())
        assert first == "retry: 2000"


def test_resume_with_last_event_id_is_exactly_once_while_events_keep_coming(
    client: httpx.Client,
) -> None:
    operation_id = countdown(client, 60, 25)
    seen: list[int] = []
    for _ in range(20):  # reconnect over and over while the operation runs
        headers = {"Last-Event-ID": str(seen[-1])} if seen else None
        frames = read_sse(
            client, f"/operations/{operation_id}/events/stream", headers=headers, stop_after=4
        )
        seen.extend(int(f["id"]) for f in frames)
        if frames and frames[-1]["event"] == "OperationSucceeded":
            break
    else:
        frames = read_sse(
            client,
            f"/operations/{operation_id}/events/stream",
            headers={"Last-Event-ID": str(seen[-1])},
        )
        seen.extend(int(f["id"]) for f in frames)
    assert seen == list(range(1, 64)), "every seq exactly once, in order, across reconnects"
    done = client.get(f"/operations/{operation_id}/events/stream", headers={"Last-Event-ID": "63"})
    assert done.status_code == 204


def test_last_event_id_wins_over_after(client: httpx.Client) -> None:
    operation_id = countdown(client, 5, 0)
    wait_terminal(client, operation_id)
    frames = read_sse(
        client, f"/operations/{operation_id}/events/stream?after=1", headers={"Last-Event-ID": "4"}
    )
    assert [int(f["id"]) for f in frames] == [5, 6, 7, 8]


def test_the_global_feed_replays_and_streams_with_positions(client: httpx.Client) -> None:
    head = client.get("/healthz").json()["head"]
    found: list[dict[str, object]] = []

    def follow() -> None:
        found.extend(
            read_sse(client, f"/events/stream?after={head}&kind=demo.countdown", stop_after=2 * 4)
        )

    listener = threading.Thread(target=follow)
    listener.start()
    time.sleep(0.3)
    a = countdown(client, 1, 0)
    start(client, "demo.report", {"reportType": "yearly-sales", "year": 2020})
    b = countdown(client, 1, 0)
    listener.join(30)
    assert not listener.is_alive()
    assert {f["data"]["operationId"] for f in found} == {a, b}  # type: ignore[index]
    positions = [int(f["id"]) for f in found]  # type: ignore[arg-type]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert all(f["data"]["position"] == int(f["id"]) for f in found)  # type: ignore[index, arg-type]
    replay = client.get(f"/events?after={head}&kind=demo.countdown&limit=1000").json()
    assert [e["position"] for e in replay][: len(positions)] == positions
    resumed = read_sse(
        client,
        "/events/stream?kind=demo.countdown",
        headers={"Last-Event-ID": str(positions[3])},
        stop_after=4,
    )
    assert [int(f["id"]) for f in resumed] == positions[4:8]


def test_list_filters_and_pages(client: httpx.Client) -> None:
    ids = [countdown(client, 1, 0) for _ in range(5)]
    for operation_id in ids:
        wait_terminal(client, operation_id)
    page = client.get("/operations?limit=3&kind=demo.countdown").json()
    assert [op["id"] for op in page["items"]] == ids[::-1][:3]
    rest = client.get(f"/operations?limit=3&kind=demo.countdown&cursor={page['next']}").json()
    assert [op["id"] for op in rest["items"]] == ids[::-1][3:] and rest["next"] is None
    assert client.get("/operations?status=running").json()["items"] == []


def test_kinds_describe_their_params(client: httpx.Client) -> None:
    kinds = {k["name"]: k for k in client.get("/kinds").json()["items"]}
    assert set(kinds) >= {"demo.countdown", "demo.report"}
    assert kinds["demo.report"]["paramsSchema"]["required"] == ["reportType", "year"]


def test_metrics_and_health(client: httpx.Client) -> None:
    countdown(client, 1, 0)
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'opstream_events_appended_total{type="OperationQueued"}' in metrics.text
    assert 'opstream_operations{status="queued"}' in metrics.text
    assert "opstream_append_seconds_bucket" in metrics.text
    assert "opstream_open_streams" in metrics.text


def test_the_dashboard_is_served(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]


def test_the_list_leaves_out_deleted_operations_and_gives_the_feed_position(
    client: httpx.Client,
) -> None:
    kept, deleted = countdown(client, 1, 0), countdown(client, 1, 0)
    for operation_id in (kept, deleted):
        wait_terminal(client, operation_id)
    assert client.delete(f"/operations/{deleted}").status_code == 204
    listing = client.get("/operations?kind=demo.countdown").json()
    assert [op["id"] for op in listing["items"]] == [kept]
    assert listing["position"] == client.get("/healthz").json()["head"]
