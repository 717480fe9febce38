"""Idle streams: server RSS per open, idle SSE stream, and how many one process holds, against
the bare broadcast app. Goal: no more per stream than the bare app; 10,000 streams.

Streams are opened in steps; after each step the server's RSS and descriptors are read. The
per-stream figure is the slope between the first and the last step (a least-squares fit), so
the server's fixed size does not count.
"""

from __future__ import annotations

import time

from bench import sse_load
from bench.common import (
    Report,
    Server,
    bare_server,
    create_operation,
    fmt,
    median,
    new_dir,
    opstream_server,
    spawn,
)

HISTORY = 499  # one replay page (catch-up reads pages of 500)


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _hold(server: Server, path: str, n: int, step: int, settle: float) -> dict[str, object]:
    time.sleep(settle)
    points = [(0, server.rss(), server.fds())]
    remote = spawn(sse_load.idle, {"base": server.url, "path": path, "n": n, "step": step})
    while True:
        message = remote.recv(300)
        if "result" in message:
            result = message["result"]
            break
        time.sleep(settle)
        points.append((message["open"], server.rss(), server.fds()))
        remote.send("more")
    remote.join()
    xs = [float(p[0]) for p in points]
    per_stream = _slope(xs, [float(p[1]) for p in points])
    return {"per_stream": per_stream, "points": points, "open": result["open"],
            "failed": result["failed"]}  # fmt: skip


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("idle")
    repeat = repeat or (1 if quick else 3)
    n = 2000 if quick else 10_000
    step = n // 5
    report.say(f"idle streams: {n} streams opened in steps of {step}, {repeat} runs")
    runs: list[dict[str, float]] = []
    for r in range(repeat):
        row: dict[str, float] = {}
        for target in ("bare", "operation"):
            work = new_dir(f"idle-{target}")
            if target == "bare":
                with bare_server(work) as server:
                    got = _hold(server, "/stream", n, step, 1.0)
            else:
                with opstream_server(work / "o.db", concurrency=1) as server:
                    op = create_operation(server.url, "bench.hold", {"seconds": 3600})["id"]
                    got = _hold(server, f"/operations/{op}/events/stream", n, step, 1.0)
            row[f"{target}_kib"] = float(got["per_stream"]) / 1024  # type: ignore[arg-type]
            row[f"{target}_open"] = float(got["open"])  # type: ignore[arg-type]
            last = got["points"][-1]  # type: ignore[index]
            row[f"{target}_rss_mib"] = last[1] / 2**20
            if got["failed"]:
                report.say(f"  {target}: stopped at {got['open']} streams: {got['failed']}")
        runs.append(row)
        report.say(
            f"  run {r + 1}: opstream {row['operation_kib']:.1f} KiB/stream, "
            f"{fmt(row['operation_open'])} open (RSS {row['operation_rss_mib']:.0f} MiB) | "
            f"bare {row['bare_kib']:.1f} KiB/stream, {fmt(row['bare_open'])} open "
            f"(RSS {row['bare_rss_mib']:.0f} MiB)"
        )
    # A stream that joined late replays the history first; what does it keep once idle?
    work = new_dir("idle-history")
    late = max(100, n // 20)
    with opstream_server(work / "o.db", concurrency=1) as server:
        params = {"seconds": 3600, "ticks": HISTORY - 2}
        op = create_operation(server.url, "bench.hold", params)["id"]
        time.sleep(3)
        got = _hold(server, f"/operations/{op}/events/stream", late, late // 4, 1.0)
    history_kib = float(got["per_stream"]) / 1024  # type: ignore[arg-type]
    report.data["history_kib_per_stream"] = history_kib
    report.say(
        f"  idle after replaying a {HISTORY}-event history: {history_kib:.1f} KiB/stream "
        f"({late} streams)"
    )
    ours, bare = median([x["operation_kib"] for x in runs]), median([x["bare_kib"] for x in runs])
    held = min(x["operation_open"] for x in runs)
    ratio = median([x["operation_kib"] / x["bare_kib"] for x in runs])
    report.data.update(runs=runs, kib_per_stream=ours, bare_kib_per_stream=bare, held=held)
    report.say(f"  median: opstream {ours:.1f} KiB/stream, bare {bare:.1f} KiB/stream")
    report.verdict("RSS per stream vs bare", ratio, "<= 1.0", ratio <= 1.0)
    report.verdict("streams held by one process", held, f">= {n}", held >= n)
    return report
