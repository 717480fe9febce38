"""The append and fan-out scenarios on PostgreSQL (``OPSTREAM_TEST_POSTGRES_URL``).

pg-appends: events/s through ``PostgresStore.append`` by 64 concurrent operations, against
raw asyncpg in the same run, same columns and row size, into a bare table beside it:
(a) one INSERT per commit over 8 connections, (b) 100 rows per commit over 8 connections.
The SQLite goals apply: >= 50 % of (b) and >= 20 x (a).

pg-fanout: events/s received in total by 500 SSE subscribers of one operation's stream on
server B while the operation's handler appends through server A (two ``opstream serve``
processes on one database; B runs no workers), against the same subscribers on server A
itself (one server), in the same run.

Every run uses a fresh schema (``bench_<pid>_<n>``), dropped at the end; PostgreSQL's own
configuration is left as it is (the default: ``synchronous_commit=on``, ``fsync=on``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from bench import sse_load
from bench.common import HOST, Report, Server, fmt, free_port, head, median, new_dir, spawn
from opstream.events import model as m

ENV = "OPSTREAM_TEST_POSTGRES_URL"
OPERATIONS = 64
CONNECTIONS = 8
PAD = 64  # as in bench.appends: a typical progress event's size
_schemas = itertools.count(1)


def url() -> str | None:
    return os.environ.get(ENV) or None


def _with_schema(base: str, schema: str) -> str:
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("search_path", schema)])))


@contextlib.contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    """A new, empty schema for one run: the URL that uses it; dropped on exit."""
    import asyncpg

    schema = f"bench_{os.getpid()}_{next(_schemas)}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(sql(f"CREATE SCHEMA {schema}"))
    try:
        yield _with_schema(base, schema)
    finally:
        asyncio.run(sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def _require() -> str:
    base = url()
    if base is None:
        raise RuntimeError(f'{ENV} is not set (export {ENV}="$(bash .ci/postgres.sh)")')
    return base


def _details(i: int) -> dict[str, object]:
    return {"i": i, "t": time.time_ns(), "pad": "x" * PAD}


# pg-appends


async def _opstream(dsn: str, seconds: float) -> float:
    from opstream.events.postgres import PostgresStore

    store = PostgresStore(dsn)
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
                await store.append(op, [m.NewEvent("BenchTick", "tick", _details(i))])
                done += 1

        start = loop.time()
        await asyncio.gather(*(writer(op) for op in ids))
        return done / (loop.time() - start)
    finally:
        await store.close()


async def _opstream_serial(dsn: str, seconds: float) -> float:
    """One operation appending one event at a time: what a single handler can do."""
    from opstream.events.postgres import PostgresStore

    store = PostgresStore(dsn)
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


RAW_TABLE = """
CREATE TABLE raw_events (
    position     bigint PRIMARY KEY,
    operation_id text NOT NULL,
    seq          integer NOT NULL,
    type         text NOT NULL,
    kind         text NOT NULL,
    message      text NOT NULL,
    happened_at  bigint NOT NULL,
    details      json NOT NULL,
    tenant       text NOT NULL DEFAULT '',
    UNIQUE (operation_id, seq)
)
"""
RAW_INSERT = (
    "INSERT INTO raw_events (position, operation_id, seq, type, kind, message, happened_at, "
    "details, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)


async def _raw(dsn: str, seconds: float, per_commit: int) -> float:
    """Raw asyncpg: ``CONNECTIONS`` connections, each committing ``per_commit`` rows at a time."""
    import asyncpg

    conns = [await asyncpg.connect(dsn) for _ in range(CONNECTIONS)]
    try:
        await conns[0].execute("DROP TABLE IF EXISTS raw_events")
        await conns[0].execute(RAW_TABLE)
        position = itertools.count(1)
        done = 0
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds

        async def writer(n: int, conn: asyncpg.Connection) -> None:
            nonlocal done
            op, seq = f"op_BENCH{n:021d}", 0
            while loop.time() < stop_at:
                rows = []
                for _ in range(per_commit):
                    seq += 1
                    rows.append(
                        (next(position), op, seq, "BenchTick", "bench.ticker", "tick",
                         m.now_ms(), orjson.dumps(_details(seq)).decode(), "")
                    )  # fmt: skip
                if per_commit == 1:
                    await conn.execute(RAW_INSERT, *rows[0])  # autocommit: one commit
                else:
                    async with conn.transaction():
                        await conn.executemany(RAW_INSERT, rows)
                done += per_commit

        start = loop.time()
        await asyncio.gather(*(writer(n, c) for n, c in enumerate(conns)))
        return done / (loop.time() - start)
    finally:
        for conn in conns:
            await conn.close()


def run_appends(quick: bool = False, repeat: int | None = None) -> Report:
    import uvloop

    base = _require()
    report = Report("pg-appends")
    repeat = repeat or (2 if quick else 5)
    seconds = 2.0 if quick else 5.0
    report.say(
        f"PostgreSQL appends: {OPERATIONS} concurrent operations through PostgresStore.append; "
        f"raw asyncpg over {CONNECTIONS} connections; {seconds:g} s per run, {repeat} runs"
    )
    runs: list[dict[str, float]] = []
    for n in range(repeat):
        with fresh_schema(base) as dsn:
            single = uvloop.run(_raw(dsn, seconds, 1))
            batched = uvloop.run(_raw(dsn, seconds, 100))
        with fresh_schema(base) as dsn:
            ours = uvloop.run(_opstream(dsn, seconds))
        with fresh_schema(base) as dsn:
            serial = uvloop.run(_opstream_serial(dsn, seconds / 2))
        runs.append({"opstream": ours, "single": single, "batch100": batched, "serial": serial})
        report.say(
            f"  run {n + 1}: opstream {fmt(ours, 'ev/s')} | asyncpg 1/commit "
            f"{fmt(single, 'rows/s')} | asyncpg 100/commit {fmt(batched, 'rows/s')} | "
            f"{ours / single:.1f} x (a), {100 * ours / batched:.0f} % of (b); one operation "
            f"alone {fmt(serial, 'ev/s')} ({100 * serial / single:.0f} % of (a))"
        )
    ours = median([r["opstream"] for r in runs])
    vs_a = median([r["opstream"] / r["single"] for r in runs])
    vs_b = median([r["opstream"] / r["batch100"] for r in runs])
    report.data.update(runs=runs, opstream=ours, vs_single=vs_a, vs_batch100=vs_b)
    report.say(
        f"  median: opstream {fmt(ours, 'ev/s')}, baseline (a) "
        f"{fmt(median([r['single'] for r in runs]), 'rows/s')}, (b) "
        f"{fmt(median([r['batch100'] for r in runs]), 'rows/s')}; one operation alone "
        f"{fmt(median([r['serial'] for r in runs]), 'ev/s')} (serial appends, not a goal)"
    )
    report.verdict("ratio vs (a) one commit per row", vs_a, ">= 20", vs_a >= 20)
    report.verdict("ratio vs (b) 100 rows per commit", vs_b, ">= 0.5", vs_b >= 0.5)
    return report


# pg-fanout


def pg_server(name: str, dsn: str, work: Path, *, concurrency: int) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "opstream.app.cli", "serve", "--host", HOST, "--port", str(port),
        "--database", dsn, "--handlers", "bench.handlers", "--concurrency", str(concurrency),
        "--log-level", "warning",
    ]  # fmt: skip
    return Server(name, argv, port, work / f"{name}.log")


def _fanout(dsn: str, plan: dict[str, object], two: bool) -> dict[str, object]:
    work = new_dir("pg-fanout")
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(pg_server("pg-a", dsn, work, concurrency=4))
        b = stack.enter_context(pg_server("pg-b", dsn, work, concurrency=0)) if two else a
        load = {**plan, "base": b.url, "producer": a.url, "target": "operation"}
        remote = spawn(sse_load.fanout, load)
        marks = []  # (head, time) as the measured window opens and closes
        while True:
            message = remote.recv(600)
            if message == "window":
                marks.append((head(a.url), time.monotonic()))
                continue
            result: dict[str, object] = message["result"]
            break
        remote.join()
    (head0, wall0), (head1, wall1) = marks
    result["appended_per_s"] = (head1 - head0) / (wall1 - wall0)
    return result


def run_fanout(quick: bool = False, repeat: int | None = None) -> Report:
    base = _require()
    report = Report("pg-fanout")
    repeat = repeat or (1 if quick else 3)
    n = 500
    seconds, warmup = (4.0, 1.0) if quick else (8.0, 2.0)
    rate = 300.0  # offered events/s: 150,000 frames/s to 500 subscribers, above capacity
    count = int(rate * (seconds + warmup + 3))
    plan = {"n": n, "rate": rate, "count": count, "pad": PAD, "seconds": seconds,
            "warmup": warmup}  # fmt: skip
    report.say(
        f"PostgreSQL fan-out: {n} subscribers of one operation on server B, its handler "
        f"appending on server A ({rate:g} events/s offered), vs the same on one server; "
        f"{seconds:g} s measured after {warmup:g} s, {repeat} runs"
    )
    runs: list[dict[str, float]] = []
    for r in range(repeat):
        row: dict[str, float] = {}
        for label, two in (("one", False), ("two", True)):
            with fresh_schema(base) as dsn:
                got = _fanout(dsn, plan, two)
            row[label] = float(got["events_per_s"])  # type: ignore[arg-type]
            row[f"{label}_appended"] = float(got["appended_per_s"])  # type: ignore[arg-type]
            if got.get("late"):
                report.say(f"  ({label}: subscribers connected after the producer began)")
        runs.append(row)
        report.say(
            f"  run {r + 1}: one server {fmt(row['one'], 'ev/s')} ({_per(row, 'one', n)}) | "
            f"two servers, append on A, subscribers on B {fmt(row['two'], 'ev/s')} "
            f"({_per(row, 'two', n)}) | {100 * row['two'] / row['one']:.0f} % of one server"
        )
    ratio = median([x["two"] / x["one"] for x in runs])
    report.data.update(runs=runs, ratio=ratio)
    mid = {key: median([x[key] for x in runs]) for key in runs[0]}
    report.say(
        f"  median: one server {fmt(mid['one'], 'ev/s')} ({_per(mid, 'one', n)}), two servers "
        f"{fmt(mid['two'], 'ev/s')} ({_per(mid, 'two', n)}); two / one {ratio:.2f}"
    )
    return report


def _per(row: dict[str, float], label: str, n: int) -> str:
    """Per subscriber, beside what the handler managed to append in the same window."""
    return f"{fmt(row[label] / n)} per subscriber of {fmt(row[f'{label}_appended'])} appended/s"
