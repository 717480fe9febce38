"""W watchers follow one running operation by Durable Stream long-poll through nginx.

Issue 17: with deploy/'s nginx configuration (``proxy_cache`` + ``proxy_cache_lock``) in
front of one server, the requests that reach the server (origin reads, counted by the
server's own ``opstream_stream_reads_total``) should stay nearly flat from 100 to 10,000
watchers (goal: at most 2 times), where without the cache they grow with W. Both are measured in
the same run, each W through nginx with the cache, then straight to the server without it, each
on a fresh operation (and a fresh nginx). Without the cache the watchers go to the server
directly: nginx without a cache adds nothing but a second connection per watcher, and
10,000 of each would pass this machine's hard limit of open files.

A watcher is what the protocol's clients do: ``offset=-1&live=long-poll``, then the
``Stream-Next-Offset`` and ``Stream-Cursor`` of each answer (query keys in lexicographic
order, as PROTOCOL.md asks for cache hits), until ``Stream-Closed``. Each is checked to have
received every event of the stream exactly once, in order, ending at the terminal event.
Watchers run as raw asyncio HTTP/1.1 clients (httpx costs too much CPU per request for
10,000 of them on two cores), in two processes above 1,000, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from typing import Any

import httpx
import orjson

from bench.common import (
    HOST,
    Remote,
    Report,
    create_operation,
    fmt,
    free_port,
    new_dir,
    opstream_server,
    remote_result,
    spawn,
)
from bench.nginx import Nginx

TERMINAL = {"OperationSucceeded", "OperationFailed", "OperationCancelled"}
READS = re.compile(r"^opstream_stream_reads_total\{[^}]*\}\s+([0-9.e+]+)$", re.MULTILINE)
REQUEST_TIMEOUT = 120.0  # one long-poll (20 s on the server) plus any queue behind it
CONNECT_BATCH = 500  # watchers that start together; then a short pause (the listen backlog)


def origin_reads(base: str) -> float:
    """The server's count of Durable Stream reads that reached it, all modes."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = READS.findall(text)
    if not found:
        raise RuntimeError(
            "the server reports no opstream_stream_reads_total: it lacks the Durable Stream "
            "read side (issue 17 item 1)"
        )
    return sum(float(value) for value in found)


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("cache")
    if shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
    sizes = [100, 1_000, 10_000]
    count, rate = (8, 1.0) if quick else (15, 1.0)
    report.say(
        f"cache: W watchers long-poll one operation of {count} ticks at {rate:g}/s through "
        "nginx (deploy/nginx/opstream.conf.template), with and without proxy_cache"
    )
    work = new_dir("cache")
    rows: list[dict[str, Any]] = []
    with opstream_server(work / "o.db", concurrency=1) as origin:
        upstream = f"{HOST}:{origin.port}"
        for watchers in sizes:
            for cached in (True, False):
                if cached:
                    with Nginx(
                        work / f"w{watchers}",
                        (upstream, upstream),
                        free_port(),
                        worker_connections=watchers + 1024,
                        access_log=False,
                    ) as nginx:
                        row = _measure(origin.url, nginx.url, watchers, count, rate)
                else:
                    row = _measure(origin.url, origin.url, watchers, count, rate)
                row.update(watchers=watchers, cached=cached)
                rows.append(row)
                how = "nginx cache" if cached else "no cache   "
                report.say(
                    f"  W={watchers:>6,} {how}: origin reads "
                    f"{fmt(row['reads'])} ({fmt(row['reads_per_s'], '/s')} over "
                    f"{row['seconds']:.1f} s); watchers with every event once: "
                    f"{row['ok']:,}/{watchers:,}; client requests {fmt(row['requests'])}"
                )
                if row["problems"]:
                    report.say(f"    problems: {row['problems'][:3]}")
    report.data.update(rows=rows, count=count, rate=rate)

    def per_s(watchers: int, cached: bool) -> float:
        row = next(r for r in rows if r["watchers"] == watchers and r["cached"] == cached)
        return float(row["reads_per_s"])

    events = count + 3  # queued, started, the ticks, succeeded
    for cached in (True, False):
        reads = [
            next(r for r in rows if r["watchers"] == w and r["cached"] == cached) for w in sizes
        ]
        report.say(
            f"  origin reads per event {'with' if cached else 'without'} the cache: "
            + ", ".join(
                f"W={w:,}: {r['reads'] / events:.1f}" for w, r in zip(sizes, reads, strict=True)
            )
        )
    with_cache = per_s(sizes[-1], True) / per_s(sizes[0], True)
    without = per_s(sizes[-1], False) / per_s(sizes[0], False)
    report.say(
        f"  origin reads/s, {sizes[-1]:,} vs {sizes[0]:,} watchers: with the cache "
        f"{with_cache:.2f}x, without {without:.1f}x"
    )
    every_event = all(r["ok"] == r["watchers"] for r in rows)
    report.verdict("every watcher got every event once", float(every_event), "1", every_event)
    report.verdict(
        "origin reads/s growth 100 -> 10,000 with cache", with_cache, "<= 2", with_cache <= 2
    )
    return report


def _measure(origin: str, proxy: str, watchers: int, count: int, rate: float) -> dict[str, Any]:
    # The ticks begin once every watcher has had time to connect and start waiting.
    lead = 3.0 + watchers / 2_000
    before = origin_reads(origin)
    op = create_operation(
        origin, "bench.ticker", {"count": count, "rate": rate, "startAt": time.time() + lead}
    )["id"]
    port = int(proxy.rsplit(":", 1)[1])
    path = f"/operations/{op}/events"
    shares = [watchers] if watchers <= 1_000 else [watchers // 2, watchers - watchers // 2]
    started = time.monotonic()
    remotes: list[Remote] = [spawn(_watch_all, port, path, share) for share in shares]
    results = [remote_result(r, timeout=600) for r in remotes]
    seconds = time.monotonic() - started
    reads = origin_reads(origin) - before
    problems = [p for r in results for p in r["problems"]]
    return {
        "reads": reads,
        "reads_per_s": reads / seconds,
        "seconds": seconds,
        "ok": sum(r["ok"] for r in results),
        "requests": sum(r["requests"] for r in results),
        "problems": problems[:10],
    }


# The watchers' process.


def _watch_all(conn: Any, port: int, path: str, watchers: int) -> dict[str, Any]:
    return asyncio.run(_watch_many(port, path, watchers))


async def _watch_many(port: int, path: str, watchers: int) -> dict[str, Any]:
    tally: dict[str, Any] = {"ok": 0, "requests": 0, "problems": []}

    async def one(index: int) -> None:
        await asyncio.sleep((index // CONNECT_BATCH) * 0.05)
        try:
            problem = await _watch(port, path, tally)
        except Exception as exc:  # a watcher that broke is counted, not fatal
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            tally["ok"] += 1
        elif len(tally["problems"]) < 10:
            tally["problems"].append(problem)

    await asyncio.gather(*(one(i) for i in range(watchers)))
    return tally


async def _watch(port: int, path: str, tally: dict[str, Any]) -> str | None:
    """Follow the stream to its end; None if every event came once, in order, else why."""
    offset, cursor = "-1", None
    seqs: list[int] = []
    last_type = ""
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        query = (f"cursor={cursor}&" if cursor else "") + f"live=long-poll&offset={offset}"
        if connection is None:
            connection = await asyncio.open_connection(HOST, port)
        try:
            status, headers, body = await asyncio.wait_for(
                _get(*connection, f"{path}?{query}"), REQUEST_TIMEOUT
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            connection[1].close()
            connection = None
            continue  # the same request again, on a new connection
        tally["requests"] += 1
        if headers.get("connection", "").lower() == "close":
            connection[1].close()
            connection = None
        if status not in (200, 204):
            return f"status {status}: {body[:200]!r}"
        for event in orjson.loads(body) if status == 200 and body else []:
            seqs.append(event["seq"])
            last_type = event["type"]
        offset = headers["stream-next-offset"]
        cursor = headers.get("stream-cursor", cursor)
        if headers.get("stream-closed") == "true":
            if connection is not None:
                connection[1].close()
            if seqs != list(range(1, len(seqs) + 1)):
                return f"events out of order, repeated or missing: {seqs}"
            if last_type not in TERMINAL:
                return f"closed without the terminal event (last {last_type})"
            return None
    return "not closed within 600 s"


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> tuple[int, dict[str, str], bytes]:
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if status in (204, 304):
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, b"".join(chunks)
            chunks.append(chunk[:-2])
    headers["connection"] = "close"
    return status, headers, await reader.read()
