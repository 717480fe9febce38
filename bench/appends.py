"""Durable appends: events/s through the store API by 64 concurrent operations, SQLite WAL,
``synchronous=FULL``, against stdlib ``sqlite3`` with the same settings, schema and rows:
(a) one commit per row, (b) 100 rows per commit. Goal: >= 50 % of (b) and >= 20 x (a).

(a) and (b) write one operation's history, so each commit adds to the end of every index.
For context, not for the verdict, (b') writes 100 rows per commit spread over 64 histories,
as opstream's rows are: then each commit also rewrites a page of the per-operation
``(operation_id, seq)`` index for every history it touches.

Also for context: (c) the same 64 operations reporting through the handler context, as
handlers do. The context writes behind the handler (each report is queued, and one append
carries all that queued during the previous commit), so an operation is not held to one
event per commit; every event is still durable before anyone is told of it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import orjson

from bench.common import Report, fmt, median, new_dir
from opstream.app.context import Context
from opstream.events import model as m
from opstream.events.sqlite import SCHEMA, SQLiteStore
from opstream.events.store import Lease

OPERATIONS = 64
PAD = 64  # bytes of padding in each event's details: a typical progress event's size


def _details(i: int) -> dict[str, object]:
    return {"i": i, "t": time.time_ns(), "pad": "x" * PAD}


async def _opstream(path: Path, seconds: float) -> float:
    store = SQLiteStore(path, synchronous="FULL")
    await store.open()
    try:
        ids = [f"op_BENCH{n:021d}" for n in range(OPERATIONS)]
        for op in ids:
            await store.create(op, "bench.ticker", {"count": 1, "rate": 1})
            await store.append(op, [m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": 1})])
        done = 0
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds

        async def writer(op: str) -> None:
            nonlocal done
            i = 0
            while loop.time() < stop_at:
                i += 1
                event = m.NewEvent("BenchTick", "tick", _details(i))
                await store.append(op, [event])
                done += 1

        start = loop.time()
        await asyncio.gather(*(writer(op) for op in ids))
        return done / (loop.time() - start)
    finally:
        await store.close()


async def _opstream_context(path: Path, seconds: float) -> float:
    """64 handlers reporting as fast as they can through their context, durable at the end."""
    store = SQLiteStore(path, synchronous="FULL")
    await store.open()
    try:
        contexts = []
        for n in range(OPERATIONS):
            await store.create(f"op_BENCH{n:021d}", "bench.ticker", {"count": 1, "rate": 1})
            claimed = await store.claim("bench", ["bench.ticker"], 600_000)
            assert claimed is not None
            operation = claimed.operation
            lease = Lease(operation.id, "bench", operation.attempt)
            contexts.append(Context(store, lease, kind=operation.kind, params=operation.params))
        done = 0
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds

        async def handler(ctx: Context) -> None:
            nonlocal done
            i = 0
            while loop.time() < stop_at:
                i += 1
                await ctx.emit("BenchTick", "tick", _details(i))
            await ctx.flush()
            done += i

        start = loop.time()
        await asyncio.gather(*(handler(ctx) for ctx in contexts))
        return done / (loop.time() - start)
    finally:
        await store.close()


async def _opstream_serial(path: Path, seconds: float) -> float:
    """One operation appending one event at a time: what a single handler can do."""
    store = SQLiteStore(path, synchronous="FULL")
    await store.open()
    try:
        op = "op_SERIAL" + "0" * 20
        await store.create(op, "bench.ticker", {"count": 1, "rate": 1})
        await store.append(op, [m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": 1})])
        loop = asyncio.get_running_loop()
        done, start = 0, loop.time()
        while loop.time() < start + seconds:
            await store.append(op, [m.NewEvent("BenchTick", "tick", _details(done))])
            done += 1
        return done / (loop.time() - start)
    finally:
        await store.close()


def _sqlite(path: Path, seconds: float, per_commit: int, operations: int = 1) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(SCHEMA)
    ids = [f"op_BENCH{n:021d}" for n in range(operations)]
    sql = (
        "INSERT INTO events (operation_id, seq, type, kind, message, happened_at, details) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    seq = done = 0
    start = time.perf_counter()
    stop_at = start + seconds
    while time.perf_counter() < stop_at:
        rows = []
        for _ in range(per_commit):
            seq += 1
            op = ids[seq % operations]
            rows.append(
                (op, seq // operations + 1, "BenchTick", "bench.ticker", "tick", m.now_ms(),
                 orjson.dumps(_details(seq)))
            )  # fmt: skip
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        done += per_commit
    rate = done / (time.perf_counter() - start)
    conn.close()
    return rate


def run(quick: bool = False, repeat: int | None = None) -> Report:
    import uvloop

    report = Report("appends")
    repeat = repeat or (2 if quick else 5)
    seconds = 2.0 if quick else 5.0
    report.say(
        f"durable appends: {OPERATIONS} concurrent operations, WAL + synchronous=FULL, "
        f"{seconds:g} s per run, {repeat} runs"
    )
    runs: list[dict[str, float]] = []
    for n in range(repeat):
        work = new_dir("appends")
        single = _sqlite(work / "a.db", seconds, 1)
        batched = _sqlite(work / "b.db", seconds, 100)
        spread = _sqlite(work / "c.db", seconds, 100, OPERATIONS)
        ours = uvloop.run(_opstream(work / "o.db", seconds))
        serial = uvloop.run(_opstream_serial(work / "s.db", seconds / 2))
        context = uvloop.run(_opstream_context(work / "x.db", seconds))
        runs.append(
            {
                "opstream": ours,
                "single": single,
                "batch100": batched,
                "spread100": spread,
                "serial": serial,
                "context": context,
            }
        )
        report.say(
            f"  run {n + 1}: opstream {fmt(ours, 'ev/s')} | "
            f"sqlite3 1/commit {fmt(single, 'rows/s')}"
            f" | sqlite3 100/commit {fmt(batched, 'rows/s')} | (b') over {OPERATIONS} "
            f"operations {fmt(spread, 'rows/s')} | {ours / single:.1f} x (a), "
            f"{100 * ours / batched:.0f} % of (b), {100 * ours / spread:.0f} % of (b'); "
            f"one operation alone {fmt(serial, 'ev/s')} "
            f"({100 * serial / single:.0f} % of (a)); (c) through the handler context "
            f"{fmt(context, 'ev/s')} ({context / batched:.2f} of (b))"
        )
    ours = median([r["opstream"] for r in runs])
    vs_a = median([r["opstream"] / r["single"] for r in runs])
    vs_b = median([r["opstream"] / r["batch100"] for r in runs])
    vs_spread = median([r["opstream"] / r["spread100"] for r in runs])
    report.data.update(
        runs=runs, opstream=ours, vs_single=vs_a, vs_batch100=vs_b, vs_spread100=vs_spread
    )
    report.say(
        f"  median: opstream {fmt(ours, 'ev/s')}, baseline (a) "
        f"{fmt(median([r['single'] for r in runs]), 'rows/s')}, (b) "
        f"{fmt(median([r['batch100'] for r in runs]), 'rows/s')}, (b') "
        f"{fmt(median([r['spread100'] for r in runs]), 'rows/s')} ({vs_spread:.2f} of it); "
        "one operation alone "
        f"{fmt(median([r['serial'] for r in runs]), 'ev/s')} (serial appends, not a goal); "
        f"(c) through the handler context {fmt(median([r['context'] for r in runs]), 'ev/s')} "
        f"({median([r['context'] / r['batch100'] for r in runs]):.2f} of (b); for context, "
        "not the verdict)"
    )
    report.verdict("ratio vs (a) one commit per row", vs_a, ">= 20", vs_a >= 20)
    report.verdict("ratio vs (b) 100 rows per commit", vs_b, ">= 0.5", vs_b >= 0.5)
    return report
