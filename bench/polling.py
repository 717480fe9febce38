"""Polite polling: ``GET /operations/{id}`` with a matching ``If-None-Match``, answered ``304``,
requests/s, against a Starlette hello-world route on the same uvicorn. Load from Debian's
``wrk`` (one thread, 50 connections) when installed, else a raw asyncio client in its own
process. Goal: >= 70 % of hello-world.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.common import (
    Report,
    bare_server,
    create_operation,
    fmt,
    median,
    new_dir,
    opstream_server,
    remote_result,
    spawn,
)

CONNECTIONS = 50


def _wrk(url: str, headers: dict[str, str], seconds: float) -> float:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if not found or "Non-2xx or 3xx" in out.stdout:
        raise RuntimeError(f"wrk: {out.stdout}{out.stderr}")
    return float(found.group(1))


def _client(conn: Any, url: str, headers: dict[str, str], seconds: float) -> float:
    """Keep-alive GETs on ``CONNECTIONS`` raw connections, each waiting for its answer before
    the next request, as wrk does. Raw streams, not httpx: its connection pool slows down
    as concurrency grows (about 270 requests/s with 50 at once, 1,600 with one, measured
    here), and would measure itself, not the server."""
    import uvloop

    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    request = (
        "\r\n".join([*lines, *(f"{k}: {v}" for k, v in headers.items())]) + "\r\n\r\n"
    ).encode()

    async def one(stop: float) -> int:
        reader, writer = await asyncio.open_connection(host, port)
        done = 0
        try:
            while time.perf_counter() < stop:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                if status >= 400:
                    raise RuntimeError(f"HTTP {status}")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                done += 1
        finally:
            writer.close()
        return done

    async def main() -> float:
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(start + seconds) for _ in range(CONNECTIONS)))
        return sum(counts) / (time.perf_counter() - start)

    return uvloop.run(main())


def _load(url: str, headers: dict[str, str], seconds: float) -> float:
    if shutil.which("wrk"):
        return _wrk(url, headers, seconds)
    return float(remote_result(spawn(_client, url, headers, seconds)))


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("polling")
    repeat = repeat or (2 if quick else 5)
    seconds = 4.0 if quick else 10.0
    tool = "wrk -t1 -c50" if shutil.which("wrk") else "raw asyncio client, 50 connections"
    report.say(f"polite polling: {tool}, {seconds:g} s per run, {repeat} runs")
    work = new_dir("polling")
    runs: list[dict[str, float]] = []
    with bare_server(work) as bare, opstream_server(work / "o.db", concurrency=1) as ours:
        op = create_operation(ours.url, "bench.hold", {"seconds": 3600})["id"]
        time.sleep(0.5)
        status = f"{ours.url}/operations/{op}"
        tag = httpx.get(status).headers["etag"]
        check = httpx.get(status, headers={"If-None-Match": tag})
        if check.status_code != 304:
            raise RuntimeError(f"expected 304 for a matching ETag, got {check.status_code}")
        report.say(f"  polling {status} with If-None-Match: {tag} -> 304")
        for r in range(repeat):
            hello = _load(f"{bare.url}/", {}, seconds)
            polled = _load(status, {"If-None-Match": tag}, seconds)
            runs.append({"hello": hello, "opstream_304": polled})
            report.say(
                f"  run {r + 1}: opstream 304 {fmt(polled, 'req/s')} | hello-world "
                f"{fmt(hello, 'req/s')} | {100 * polled / hello:.0f} %"
            )
    ratio = median([x["opstream_304"] / x["hello"] for x in runs])
    report.data.update(runs=runs, ratio=ratio, tool=tool)
    report.say(
        f"  median: opstream {fmt(median([x['opstream_304'] for x in runs]), 'req/s')}, "
        f"hello-world {fmt(median([x['hello'] for x in runs]), 'req/s')}"
    )
    report.verdict("304 req/s vs hello-world", ratio, ">= 0.7", ratio >= 0.7)
    return report
