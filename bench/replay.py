"""Replay: events/s of ``GET /operations/{id}/events`` paging (``limit=1000``, following
``Link: rel="next"``) through a 100,000-event history, from a client in its own process,
against stdlib ``sqlite3`` selecting the same pages + ``orjson`` encoding them (no HTTP at
all: the ceiling). The global feed ``GET /events`` is paged too. Goal: >= 50 %.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import Report, fmt, median, new_dir, opstream_server, remote_result, spawn
from bench.seed import TEMPLATE, seed
from opstream.events.base.rows import EVENT_COLUMNS

EVENTS = 100_000
PAGE = 1000


def _page_through(conn: Any, first: str) -> dict[str, float]:
    """GET pages until there is no ``next`` link; events/s and the count seen."""
    seen = 0
    with httpx.Client(timeout=60) as client:
        url: str | None = first
        start = time.perf_counter()
        while url:
            response = client.get(url)
            response.raise_for_status()
            seen += len(orjson.loads(response.content))
            link = response.links.get("next")
            url = str(response.url.join(link["url"])) if link else None
        elapsed = time.perf_counter() - start
    return {"events": seen, "per_s": seen / elapsed}


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _baseline(path: Path) -> float:
    """The same pages straight from SQLite, each encoded to the same JSON array.

    The rows are read in the cheapest way SQLite has: one operation's events rise in
    position as in seq, so each page is a walk along the table's own key (the rowid)."""
    conn = sqlite3.connect(path)
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE operation_id = ? AND position > ? "
        "ORDER BY position LIMIT ?"
    )
    seen = after = 0
    start = time.perf_counter()
    while True:
        rows = conn.execute(sql, (TEMPLATE, after, PAGE)).fetchall()
        if not rows:
            break
        body = orjson.dumps(
            [
                {"id": f"{op}:{seq}", "operationId": op, "seq": seq, "position": pos,
                 "type": type_, "kind": kind, "message": message, "happenedAt": _iso(at),
                 "details": orjson.loads(details)}
                for pos, op, seq, type_, kind, message, at, details, _tenant in rows
            ]
        )  # fmt: skip
        assert body
        seen += len(rows)
        after = rows[-1][0]
    elapsed = time.perf_counter() - start
    conn.close()
    assert seen == EVENTS, seen
    return seen / elapsed


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("replay")
    repeat = repeat or (3 if quick else 5)
    report.say(f"replay: one history of {EVENTS:,} events, pages of {PAGE}, {repeat} runs")
    work = new_dir("replay")
    db = work / "r.db"
    seed(db, operations=1, events_per_operation=EVENTS)
    runs: list[dict[str, float]] = []
    with opstream_server(db, concurrency=0) as server:
        per_op = f"{server.url}/operations/{TEMPLATE}/events?limit={PAGE}"
        feed = f"{server.url}/events?limit={PAGE}"
        for r in range(repeat):
            base = _baseline(db)
            ours = remote_result(spawn(_page_through, per_op))
            glob = remote_result(spawn(_page_through, feed))
            if ours["events"] != EVENTS or glob["events"] != EVENTS:
                raise RuntimeError(f"replay saw {ours['events']} / {glob['events']} events")
            runs.append({"baseline": base, "operation": ours["per_s"], "feed": glob["per_s"]})
            report.say(
                f"  run {r + 1}: opstream {fmt(ours['per_s'], 'ev/s')} (global feed "
                f"{fmt(glob['per_s'], 'ev/s')}) | sqlite3 + orjson {fmt(base, 'ev/s')} | "
                f"{100 * ours['per_s'] / base:.0f} %"
            )
        # One page near the end of the long history, by the two routes that can serve it.
        tail = EVENTS - 200
        pages = {
            "GET /operations/{id}/events?after=...": f"/operations/{TEMPLATE}/events?after={tail}",
            "GET /events?operation={id}&after=...": f"/events?operation={TEMPLATE}&after={tail}",
        }
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for name, url in pages.items():
                took = []
                for _ in range(20):
                    start = time.perf_counter()
                    client.get(url + "&limit=100").raise_for_status()
                    took.append((time.perf_counter() - start) * 1e3)
                report.data.setdefault("tail_page_ms", {})[name] = median(took)
                report.say(f"  one page of 100 near the end, {name}: {median(took):.1f} ms")
    ratio = median([x["operation"] / x["baseline"] for x in runs])
    feed_ratio = median([x["feed"] / x["baseline"] for x in runs])
    report.data.update(runs=runs, ratio=ratio, feed_ratio=feed_ratio)
    report.say(
        f"  median: opstream {fmt(median([x['operation'] for x in runs]), 'ev/s')}, feed "
        f"{fmt(median([x['feed'] for x in runs]), 'ev/s')}, baseline "
        f"{fmt(median([x['baseline'] for x in runs]), 'ev/s')}"
    )
    report.verdict("replay vs sqlite3 + orjson", ratio, ">= 0.5", ratio >= 0.5)
    report.verdict("global feed replay vs sqlite3 + orjson", feed_ratio, ">= 0.5",
                   feed_ratio >= 0.5)  # fmt: skip
    return report
