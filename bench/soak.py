"""Soak: server RSS and open file descriptors over a steady load with subscribers coming and
going — operations started every 0.25 s (``demo.countdown``, 10 steps of 50 ms), a stream
subscriber per operation that reads it to its end, 20 global-feed subscribers that reconnect
every 5 s, and 5 pollers with ``If-None-Match``. Goal: no growth after warm-up (the first
fifth of the run). ``--seconds 60`` for a short run; the recorded run is ``--seconds 600``.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from bench import sse_load
from bench.common import Report, new_dir, opstream_server, spawn

FEED_SUBSCRIBERS = 20
POLLERS = 5


def _load(conn: Any, base: str, seconds: float) -> dict[str, int]:
    import uvloop

    return uvloop.run(_load_async(base, seconds))


async def _load_async(base: str, seconds: float) -> dict[str, int]:
    host, port = sse_load._split(base)
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    counts = {"created": 0, "streams_done": 0, "feed_reconnects": 0, "polls": 0, "errors": 0}
    recent: list[str] = []
    totals = sse_load.Totals()
    rng = random.Random(1)

    async def follow(op: str) -> None:
        try:
            [stream] = await sse_load.open_streams(
                host, port, [f"/operations/{op}/events/stream"], totals
            )
            await asyncio.wait_for(stream.closed, 30)
            counts["streams_done"] += 1
        except Exception:
            counts["errors"] += 1

    async def feed() -> None:
        while loop.time() < stop:
            try:
                path = f"/events/stream?after={await _head()}"
                [stream] = await sse_load.open_streams(host, port, [path], totals)
                await asyncio.sleep(rng.uniform(2.5, 7.5))
                stream.close()
                counts["feed_reconnects"] += 1
            except Exception:
                counts["errors"] += 1
                await asyncio.sleep(1)

    async def _head() -> int:
        return int((await http.get("/healthz")).json()["head"])

    async def poll() -> None:
        tags: dict[str, str] = {}
        while loop.time() < stop:
            await asyncio.sleep(0.2)
            if not recent:
                continue
            op = rng.choice(recent[-20:])
            try:
                headers = {"If-None-Match": tags[op]} if op in tags else {}
                response = await http.get(f"/operations/{op}", headers=headers)
                if "etag" in response.headers:
                    tags[op] = response.headers["etag"]
                counts["polls"] += 1
            except Exception:
                counts["errors"] += 1

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        tasks = [asyncio.create_task(feed()) for _ in range(FEED_SUBSCRIBERS)]
        tasks += [asyncio.create_task(poll()) for _ in range(POLLERS)]
        followers: set[asyncio.Task[None]] = set()
        while loop.time() < stop:
            try:
                response = await http.post(
                    "/operations",
                    json={"kind": "demo.countdown", "params": {"steps": 10, "intervalMs": 50}},
                )
                op = response.json()["id"]
                recent.append(op)
                del recent[:-100]
                counts["created"] += 1
                task = asyncio.create_task(follow(op))
                followers.add(task)
                task.add_done_callback(followers.discard)
            except Exception:
                counts["errors"] += 1
            await asyncio.sleep(0.25)
        await asyncio.gather(*tasks, *followers, return_exceptions=True)
    counts["events_received"] = totals.events
    return counts


def run(quick: bool = False, repeat: int | None = None, seconds: float | None = None) -> Report:
    report = Report("soak")
    seconds = seconds or (30.0 if quick else 600.0)
    every = max(1.0, seconds / 60)
    report.say(f"soak: {seconds:g} s of steady load, sampled every {every:g} s")
    db = new_dir("soak") / "s.db"
    samples: list[tuple[float, int, int]] = []
    with opstream_server(db, concurrency=8) as server:
        remote = spawn(_load, server.url, seconds)
        start = time.monotonic()
        while remote.process.is_alive() or not remote.conn.poll(0):
            samples.append((time.monotonic() - start, server.rss(), server.fds()))
            if remote.conn.poll(every):
                break
        load = remote.recv(60)["result"]
        remote.join()
    warm = [s for s in samples if seconds / 5 <= s[0] <= seconds]
    first, last = warm[0], warm[-1]
    peak_rss = max(s[1] for s in warm)
    rss_growth = (last[1] - first[1]) / first[1]
    fd_growth = last[2] - first[2]
    minutes = max(1e-9, (last[0] - first[0]) / 60)
    slope = (last[1] - first[1]) / 1024 / minutes
    report.data.update(samples=samples, load=load, rss_growth=rss_growth, fd_growth=fd_growth,
                       rss_kib_per_minute=slope)  # fmt: skip
    report.say(f"  load: {load}")
    for t, rss, fds in [*samples[:: max(1, len(samples) // 12)], samples[-1]]:
        report.say(f"    t={t:6.0f} s  RSS {rss / 2**20:6.1f} MiB  fds {fds}")
    report.say(
        f"  after warm-up: RSS {first[1] / 2**20:.1f} -> {last[1] / 2**20:.1f} MiB "
        f"(peak {peak_rss / 2**20:.1f}; {slope:+.0f} KiB/min), fds {first[2]} -> {last[2]}"
    )
    report.verdict("RSS growth after warm-up", rss_growth, "<= 0.05", rss_growth <= 0.05)
    report.verdict("fd growth after warm-up", fd_growth, "<= 5", fd_growth <= 5)
    if load.get("errors"):
        report.say(f"  ({load['errors']} client errors during the run)")
    return report
