"""Durable appends: events/s through the store API by 64 concurrent operations, SQLite WAL,
``synchronous=FULL``, against stdlib ``sqlite3`` with the same settings, schema and rows:
(a) one commit per row, (b) 100 rows per commit. Goal: >= 50 % of (b) and >= 20 x (a).

(a) and (b) write one operation's history, so each commit adds to the end of every index.
For context, not for the verdict, (d) is what opstream's schema costs without opstream:
stdlib ``sqlite3`` making the writes opstream's writer makes for the same 64 operations, one
event each per commit (the events, each operation's row with its projection, the event index
every ``INDEX_EVERY`` events), with no planning and no callers. The gap between (d) and
opstream is the Python around the writes; the gap between (d) and (b) is the schema.

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
from opstream.app.runtime.context import Context
from opstream.events import model as m
from opstream.events.base.rows import EVENT_COLUMNS
from opstream.events.codec import dump_operation
from opstream.events.fold import Operation
from opstream.events.sqlite import SQLiteStore
from opstream.events.sqlite.queries import HEAD_SQL, INDEX_EVERY
from opstream.events.sqlite.schema import SCHEMA
from opstream.events.store import Lease

OPERATIONS = 64
PAD = 64  # bytes of padding in each event's details: a typical progress event's size


def _details(i: int) -> dict[str, object]:
    return {"i": i, "t": time.time_ns(), "pad": "x" * PAD}


async def _start_operations(store: SQLiteStore) -> dict[str, Operation]:
    """The 64 operations, created and started: each appends from seq 3 on."""
    started = {}
    for n in range(OPERATIONS):
        op = f"op_BENCH{n:021d}"
        await store.create(op, "bench.ticker", {"count": 1, "rate": 1})
        event = m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": 1})
        started[op] = (await store.append(op, [event])).operation
    return started


async def _opstream(path: Path, seconds: float) -> float:
    store = SQLiteStore(path, synchronous="FULL")
    await store.open()
    try:
        ids = list(await _start_operations(store))
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


def _sqlite(path: Path, seconds: float, per_commit: int) -> float:
    """(a) and (b): one history, ``per_commit`` rows a commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(SCHEMA)
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
            rows.append(
                ("op_BENCH" + "0" * 21, seq, "BenchTick", "bench.ticker", "tick", m.now_ms(),
                 orjson.dumps(_details(seq)))
            )  # fmt: skip
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        done += per_commit
    rate = done / (time.perf_counter() - start)
    conn.close()
    return rate


async def _started_file(path: Path) -> dict[str, Operation]:
    store = SQLiteStore(path, synchronous="FULL")
    await store.open()
    try:
        return await _start_operations(store)
    finally:
        await store.close()


def _sqlite_as_opstream(path: Path, seconds: float, operations: dict[str, Operation]) -> float:
    """(d): the writes of opstream's writer for ``operations`` (already in the file at
    ``path``), each appending one event per commit, by stdlib ``sqlite3`` at full speed."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    insert = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    update = "UPDATE operations SET last_seq = ?, state = ? WHERE id = ? AND last_seq = ?"
    index = (
        "INSERT OR IGNORE INTO event_index (operation_id, seq, position) "
        "SELECT operation_id, seq, position FROM events WHERE position > ? "
        "ORDER BY operation_id, seq"
    )
    # The projection's size is what matters to the database; it is not re-encoded.
    states = {op: dump_operation(operation) for op, operation in operations.items()}
    seqs = {op: operation.last_seq for op, operation in operations.items()}
    head = conn.execute(HEAD_SQL).fetchone()[0]
    indexed = conn.execute("SELECT indexed_through FROM meta").fetchone()[0]
    done = 0
    start = time.perf_counter()
    while time.perf_counter() < start + seconds:
        events, rows = [], []
        for op, state in states.items():
            head += 1
            seq = seqs[op] = seqs[op] + 1
            details = orjson.dumps(_details(head))
            row = (head, op, seq, "BenchTick", "bench.ticker", "tick", m.now_ms(), details, "")
            events.append(row)
            rows.append((seq, state, op, seq - 1))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, events)
        conn.executemany(update, rows)
        if head - indexed >= INDEX_EVERY:
            conn.execute(index, (indexed,))
            conn.execute("UPDATE meta SET indexed_through = ?", (head,))
            indexed = head
        conn.execute("COMMIT")
        done += len(events)
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
        schema = _sqlite_as_opstream(
            work / "d.db", seconds, uvloop.run(_started_file(work / "d.db"))
        )
        ours = uvloop.run(_opstream(work / "o.db", seconds))
        serial = uvloop.run(_opstream_serial(work / "s.db", seconds / 2))
        context = uvloop.run(_opstream_context(work / "x.db", seconds))
        runs.append(
            {
                "opstream": ours,
                "single": single,
                "batch100": batched,
                "schema": schema,
                "serial": serial,
                "context": context,
            }
        )
        report.say(
            f"  run {n + 1}: opstream {fmt(ours, 'ev/s')} | "
            f"sqlite3 1/commit {fmt(single, 'rows/s')}"
            f" | sqlite3 100/commit {fmt(batched, 'rows/s')} | {ours / single:.1f} x (a), "
            f"{100 * ours / batched:.0f} % of (b); (d) sqlite3 making opstream's writes "
            f"{fmt(schema, 'rows/s')} ({schema / single:.1f} x (a), {schema / batched:.2f} of "
            f"(b); opstream {ours / schema:.2f} of it); one operation alone "
            f"{fmt(serial, 'ev/s')} ({100 * serial / single:.0f} % of (a)); (c) through the "
            f"handler context {fmt(context, 'ev/s')} ({context / batched:.2f} of (b))"
        )
    ours = median([r["opstream"] for r in runs])
    vs_a = median([r["opstream"] / r["single"] for r in runs])
    vs_b = median([r["opstream"] / r["batch100"] for r in runs])
    schema_vs_a = median([r["schema"] / r["single"] for r in runs])
    schema_vs_b = median([r["schema"] / r["batch100"] for r in runs])
    report.data.update(
        runs=runs,
        opstream=ours,
        vs_single=vs_a,
        vs_batch100=vs_b,
        schema_vs_single=schema_vs_a,
        schema_vs_batch100=schema_vs_b,
    )
    report.say(
        f"  median: opstream {fmt(ours, 'ev/s')}, baseline (a) "
        f"{fmt(median([r['single'] for r in runs]), 'rows/s')}, (b) "
        f"{fmt(median([r['batch100'] for r in runs]), 'rows/s')}; "
        "one operation alone "
        f"{fmt(median([r['serial'] for r in runs]), 'ev/s')} (serial appends, not a goal); "
        f"(c) through the handler context {fmt(median([r['context'] for r in runs]), 'ev/s')} "
        f"({median([r['context'] / r['batch100'] for r in runs]):.2f} of (b)); "
        "(d) sqlite3 making opstream's writes "
        f"{fmt(median([r['schema'] for r in runs]), 'rows/s')} "
        f"({schema_vs_a:.1f} x (a), {schema_vs_b:.2f} of (b)); (c) and (d) for context, "
        "not the verdict"
    )
    report.verdict("ratio vs (a) one commit per row", vs_a, ">= 20", vs_a >= 20)
    report.verdict("ratio vs (b) 100 rows per commit", vs_b, ">= 0.5", vs_b >= 0.5)
    return report
