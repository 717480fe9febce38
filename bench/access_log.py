"""What the access log costs: polite polling (``304``) against ``opstream serve`` at the
default ``--log-level info`` (one access line per request, tokens redacted) and at
``warning`` (no access lines), alternating in the same run. Load as bench/polling.py
(wrk, else a raw asyncio client). Recorded, not a goal: the access log is on by default
because operators need it; ``--log-level warning`` turns it off.
"""

from __future__ import annotations

import shutil
import time

import httpx

from bench.common import Report, create_operation, fmt, median, new_dir, opstream_server
from bench.polling import _load


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("access-log")
    repeat = repeat or (2 if quick else 5)
    seconds = 4.0 if quick else 10.0
    tool = "wrk -t1 -c50" if shutil.which("wrk") else "raw asyncio client, 50 connections"
    report.say(f"304 polls with and without access lines: {tool}, {seconds:g} s, {repeat} runs")
    quiet_dir, logged_dir = new_dir("access-quiet"), new_dir("access-logged")
    runs: list[dict[str, float]] = []
    with (
        opstream_server(quiet_dir / "o.db", concurrency=1) as quiet,
        opstream_server(logged_dir / "o.db", concurrency=1, log_level="info") as logged,
    ):
        targets = {}
        for name, server in (("warning", quiet), ("info", logged)):
            op = create_operation(server.url, "bench.hold", {"seconds": 3600})["id"]
            time.sleep(0.5)
            status = f"{server.url}/operations/{op}"
            tag = httpx.get(status).headers["etag"]
            assert httpx.get(status, headers={"If-None-Match": tag}).status_code == 304
            targets[name] = (status, tag)
        for r in range(repeat):
            result = {
                name: _load(status, {"If-None-Match": tag}, seconds)
                for name, (status, tag) in targets.items()
            }
            runs.append(result)
            report.say(
                f"  run {r + 1}: info (access lines) {fmt(result['info'], 'req/s')} | "
                f"warning {fmt(result['warning'], 'req/s')} | "
                f"{100 * result['info'] / result['warning']:.0f} %"
            )
        lines = sum(1 for _ in (logged_dir / "server.log").open("rb"))
    ratio = median([x["info"] / x["warning"] for x in runs])
    report.data.update(runs=runs, ratio=ratio, tool=tool, log_lines=lines)
    report.say(
        f"  median: info {fmt(median([x['info'] for x in runs]), 'req/s')}, warning "
        f"{fmt(median([x['warning'] for x in runs]), 'req/s')}; {lines:,} log lines written"
    )
    report.verdict("304 req/s with access lines vs without", ratio, "recorded", True)
    return report
