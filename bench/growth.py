"""Cost growth: append latency (store API) and replay-page / status latency (HTTP, real server)
with 10^3, 10^5 and 10^6 events in the store (10 events per operation, so 10^6 events is
10^5 operations), and the query plans of every read and write the store makes.
Goal: flat — a page's cost does not grow with history; no full scans.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import uvloop

from bench.common import Report, new_dir, opstream_server, percentile
from bench.seed import copy_id, seed
from opstream.events import model as m
from opstream.events.base.rows import EVENT_COLUMNS
from opstream.events.sqlite import SQLiteStore
from opstream.events.sqlite.queries import OPERATION_EVENTS, OPERATION_FEED

EVENTS_PER_OPERATION = 10

PLANS = {
    "get (status read)": ("SELECT state FROM operations WHERE id = ?", ("op_x",)),
    "read (operation page)": (OPERATION_EVENTS, {"op": "op_x", "after": 0, "limit": 100}),
    "read_all (feed page)": (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? AND position <= ? "
        "ORDER BY position LIMIT ?", (0, 10, 100)),
    "read_all kind=": (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE kind = ? AND position > ? "
        "ORDER BY position LIMIT ?", ("k", 0, 100)),
    "read_all operation=": (OPERATION_FEED, {"op": "op_x", "after": 5, "limit": 100}),
    "list_operations": ("SELECT state FROM operations ORDER BY id DESC LIMIT ?", (50,)),
    "list_operations status=": (
        "SELECT state FROM operations WHERE status = ? ORDER BY id DESC LIMIT ?",
        ("running", 50)),
    "list_operations kind= before=": (
        "SELECT state FROM operations WHERE kind = ? AND id < ? ORDER BY id DESC LIMIT ?",
        ("k", "op_z", 50)),
    "claim": (
        "SELECT id, state, lease_owner FROM operations WHERE status = ? AND kind IN (?, ?) "
        "ORDER BY id LIMIT 1", ("queued", "a", "b")),
    "recover": (
        "SELECT id, state, lease_owner, lease_expires_at FROM operations "
        "WHERE lease_owner IS NOT NULL AND lease_expires_at < ? "
        "ORDER BY lease_expires_at LIMIT ?", (0, 100)),
    "load current (append)": (
        "SELECT id, state, lease_owner, lease_expires_at FROM operations WHERE id IN (?, ?)",
        ("a", "b")),
    "head": ("SELECT seq FROM sqlite_sequence WHERE name = 'events'", ()),
}  # fmt: skip


async def _plans(path: Path) -> dict[str, list[str]]:
    store = SQLiteStore(path)
    await store.open()
    try:
        return {name: await store.explain(sql, params) for name, (sql, params) in PLANS.items()}
    finally:
        await store.close()


async def _appends(path: Path, count: int) -> tuple[list[float], None]:
    store = SQLiteStore(path, synchronous="FULL")
    await store.open()
    try:
        op = f"op_1GROWTH{time.time_ns():017d}"[:29]
        await store.create(op, "bench.ticker", {"count": count, "rate": 1})
        await store.append(op, [m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": 1})])
        took = []
        for i in range(count):
            event = m.NewEvent("BenchTick", "tick", {"i": i, "t": 0, "pad": "x" * 64})
            start = time.perf_counter()
            await store.append(op, [event])
            took.append(time.perf_counter() - start)
        return took, None
    finally:
        await store.close()


def _timed(client: httpx.Client, urls: list[str]) -> list[float]:
    took = []
    for url in urls:
        start = time.perf_counter()
        response = client.get(url)
        took.append(time.perf_counter() - start)
        if response.status_code >= 400:
            raise RuntimeError(f"GET {url}: {response.status_code}")
    return took


def _round(db: Path, operations: int, samples: int, rng: random.Random) -> dict[str, list[float]]:
    """One round of every figure on one store: appends in-process, reads over HTTP."""
    appends, _ = uvloop.run(_appends(db, samples))
    figures = {"append (store API)": appends}
    with opstream_server(db, concurrency=0) as server, httpx.Client(base_url=server.url) as c:
        ids = [copy_id(rng.randrange(1, operations)) for _ in range(samples)]
        head = int(c.get("/healthz").json()["head"])
        positions = [rng.randrange(0, max(1, head - 100)) for _ in range(samples)]
        _timed(c, [f"/operations/{i}" for i in ids[:50]])  # warm up
        figures["GET /operations/{id}"] = _timed(c, [f"/operations/{i}" for i in ids])
        figures["GET /operations/{id}/events"] = _timed(
            c, [f"/operations/{i}/events?limit=100" for i in ids]
        )
        figures["GET /events?after=random"] = _timed(
            c, [f"/events?after={p}&limit=100" for p in positions]
        )
        figures["GET /events?after=head-100"] = _timed(
            c, [f"/events?after={head - 100}&limit=100"] * samples
        )
        figures["GET /operations?status=succeeded"] = _timed(
            c, ["/operations?status=succeeded&limit=50"] * max(10, samples // 4)
        )
    return figures


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("growth")
    sizes = [10**3, 10**5, 10**6]
    rounds = repeat or (1 if quick else 3)
    samples = 200 if quick else 400
    report.say(
        f"cost growth: {', '.join(f'{s:,}' for s in sizes)} events ({EVENTS_PER_OPERATION} per "
        f"operation); {rounds} rounds of {samples} samples per figure, the sizes taking turns "
        "so the machine's drift hits them alike; times in ms, p50 / p99"
    )
    rows: dict[int, dict[str, tuple[float, float]]] = {}
    rng = random.Random(7)
    stores: dict[int, Path] = {}
    for size in sizes:
        stores[size] = new_dir(f"growth-{size}") / "g.db"
        started = time.monotonic()
        seed(stores[size], operations=size // EVENTS_PER_OPERATION,
             events_per_operation=EVENTS_PER_OPERATION)  # fmt: skip
        report.say(f"  seeded {size:,} events in {time.monotonic() - started:.0f} s")
    collected: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            got = _round(stores[size], size // EVENTS_PER_OPERATION, samples, rng)
            for name, took in got.items():
                collected[size].setdefault(name, []).extend(took)
    plans = uvloop.run(_plans(stores[sizes[-1]]))
    for size in sizes:
        operations = size // EVENTS_PER_OPERATION
        figures = collected[size]
        rows[size] = {
            name: (percentile(t, 50) * 1e3, percentile(t, 99) * 1e3) for name, t in figures.items()
        }
        report.say(f"  {size:>9,} events, {operations:,} operations:")
        for name, (p50, p99) in rows[size].items():
            report.say(f"      {name:<36} {p50:7.2f} / {p99:7.2f}")
    report.say("  query plans (EXPLAIN QUERY PLAN, on the largest store):")
    full_scans = []
    for name, plan in plans.items():
        report.say(f"      {name:<30} {' | '.join(plan)}")
        # sqlite_sequence holds one row per AUTOINCREMENT table: scanning it is not a full scan.
        scans = [s for s in plan if s.startswith("SCAN") and "USING" not in s]
        if any("sqlite_sequence" not in step for step in scans):
            full_scans.append(name)
    small, large = rows[sizes[0]], rows[sizes[-1]]
    growth = {name: large[name][0] / small[name][0] for name in small}
    worst = max(growth, key=lambda k: growth[k])
    report.data.update(
        rows={str(k): v for k, v in rows.items()}, plans=plans, growth=growth, full_scans=full_scans
    )
    report.say(
        "  p50 at 10^6 / p50 at 10^3: "
        + ", ".join(f"{name} {ratio:.2f}" for name, ratio in growth.items())
    )
    report.verdict(f"worst p50 growth 10^3 -> 10^6 ({worst})", growth[worst], "<= ~1.5 (flat)",
                   growth[worst] <= 1.5)  # fmt: skip
    report.verdict("queries with a full table scan", len(full_scans), "0", not full_scans)
    if full_scans:
        report.say(f"      full scans: {', '.join(full_scans)}")
    return report
