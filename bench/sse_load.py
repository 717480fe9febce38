"""The SSE load: many streams in one client process, counted cheaply.

Each stream is a raw asyncio protocol (no HTTP client library) that counts ``data:`` lines
and, where asked, reads the ``"t":`` stamp the bench ticker puts in each event to measure
append-to-receive latency on the shared wall clock. Runs under uvloop in its own process,
spawned by ``bench.common.spawn``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx

STAMP = re.compile(rb'"t":(\d+),')
CONNECT_AT_ONCE = 200


class Totals:
    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0
        self.latencies: list[int] = []
        self.measuring = False


class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, totals: Totals, stamps: bool) -> None:
        self.request, self.totals, self.stamps = request, totals, stamps
        self.headers = b""
        self.status = 0
        self.tail = b""
        self.opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self.status:
            self.headers += data
            end = self.headers.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.headers[9:12])
            data = self.headers[end + 4 :]
            self.headers = b""
            if not self.opened.done():
                self.opened.set_result(self.status)
        totals = self.totals
        totals.bytes += len(data)
        totals.events += (self.tail + data).count(b"data:")
        self.tail = data[-4:]
        if self.stamps and totals.measuring:
            totals.latencies.extend(now - int(t) for t in STAMP.findall(data))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before headers: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_streams(
    host: str, port: int, paths: list[str], totals: Totals, *, stamps: bool = False
) -> list[Stream]:
    """Open one stream per path, ``CONNECT_AT_ONCE`` at a time; each answered 200."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(path: str) -> Stream:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        async with gate:
            for attempt in range(5):
                stream = Stream(request, totals, stamps)
                try:
                    await loop.create_connection(lambda s=stream: s, host, port)  # type: ignore[misc]
                    status = await asyncio.wait_for(stream.opened, 30)
                except (OSError, TimeoutError, ConnectionError):
                    stream.close()
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                if status != 200:
                    raise RuntimeError(f"{path}: HTTP {status}")
                return stream
        raise RuntimeError(f"{path}: could not connect")

    return list(await asyncio.gather(*(one(p) for p in paths)))


def _split(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1]
    host, port = rest.rsplit(":", 1)
    return host, int(port)


def fanout(conn: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Subscribe ``n`` streams, start the producer, count events received in a window."""
    import uvloop

    return uvloop.run(_fanout(plan, conn))


async def _fanout(plan: dict[str, Any], conn: Any = None) -> dict[str, Any]:
    base, n, target = plan["base"], plan["n"], plan["target"]
    host, port = _split(base)
    totals = Totals()
    # The operation is created (so its handler runs) on ``producer`` when given: another
    # server sharing the database, whose events reach ``base`` through the store.
    async with httpx.AsyncClient(base_url=plan.get("producer", base), timeout=30) as http:
        connect_budget = 1.0 + n * 0.004
        start_at = time.time() + connect_budget
        ticker = {"count": plan["count"], "rate": plan["rate"], "pad": plan["pad"]}
        kind, extra = plan.get("kind", "bench.ticker"), plan.get("params", {})
        if target == "bare":
            paths = ["/stream"] * n
        else:
            ops = []  # ``operations`` tickers (one by default); subscribers spread over them
            for _ in range(plan.get("operations", 1)):
                response = await http.post(
                    "/operations",
                    json={"kind": kind, "params": {**ticker, **extra, "startAt": start_at}},
                )
                response.raise_for_status()
                ops.append(response.json()["id"])
            if target == "operation":
                paths = [f"/operations/{ops[i % len(ops)]}/events/stream" for i in range(n)]
            else:
                after = (await http.get("/healthz")).json()["head"]
                paths = [f"/events/stream?after={after}"] * n
        t0 = time.time()
        streams = await open_streams(host, port, paths, totals, stamps=plan.get("stamps", False))
        connected_in = time.time() - t0
        if target == "bare":
            start_at = time.time() + 0.2
            q = {**ticker, "startAt": start_at}
            (await http.post("/start", params=q)).raise_for_status()
        late = time.time() > start_at
        await asyncio.sleep(max(0.0, start_at - time.time()) + plan["warmup"])
        first, totals.measuring = totals.events, True
        if conn is not None:
            conn.send("window")  # the parent reads the server's CPU time now and at the end
        t1 = time.monotonic()
        await asyncio.sleep(plan["seconds"])
        received = totals.events - first
        t2 = time.monotonic()
        if conn is not None:
            conn.send("window")
        totals.measuring = False
        for stream in streams:
            stream.close()
    return {
        "events_per_s": received / (t2 - t1),
        "window": (t1, t2),  # time.monotonic(), the same clock in every process
        "connected_in": connected_in,
        "late": late,
        "latencies_ns": totals.latencies,
    }


def idle(conn: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Open ``n`` streams and hold them until told to close; say how many are open."""
    import uvloop

    return uvloop.run(_idle(conn, plan))


async def _idle(conn: Any, plan: dict[str, Any]) -> dict[str, Any]:
    host, port = _split(plan["base"])
    totals = Totals()
    loop = asyncio.get_running_loop()
    streams: list[Stream] = []
    failed = ""
    step = plan.get("step", plan["n"])
    for start in range(0, plan["n"], step):
        count = min(step, plan["n"] - start)
        try:
            streams += await open_streams(host, port, [plan["path"]] * count, totals)
        except Exception as exc:
            failed = repr(exc)
            break
        conn.send({"open": len(streams)})
        order = await loop.run_in_executor(None, conn.recv)
        if order != "more":
            break
    alive = sum(not s.closed.done() for s in streams)
    for stream in streams:
        stream.close()
    return {"open": alive, "failed": failed}
