"""The append, fan-out and latency scenarios on PostgreSQL (``OPSTREAM_TEST_POSTGRES_URL``).

pg-appends: events/s through ``PostgresStore.append`` by 64 concurrent operations, against
raw asyncpg in the same run, same columns and row size, into a bare table beside it:
(a) one INSERT per commit over 8 connections, (b) 100 rows per commit over 8 connections.
The SQLite goals apply: >= 50 % of (b) and >= 20 x (a).

pg-fanout: fan-out capacity across two ``opstream serve`` processes on one database. Server
A runs 8 ``bench.burst`` operations, each emitting 10 events at a time as fast as its commits
allow (one handler's serial emits commit a few hundred events/s, which B delivers in full: no
capacity figure); 1,000 SSE subscribers spread over their 8 streams read server B (API only,
so it runs no handler). The figure is events/s received in total on B, beside the same
subscribers on A alone and the bare sse-starlette broadcast app (``bench/bare_app.py``, 1,000
subscribers, 300 events/s), in the same run. The SQLite goal applies: >= 80 % of the bare
app. Each run says how much of what was appended a subscriber received: B's figure is its
capacity when that is less than all. The unit favours opstream under this load: it writes
every event that arrived since a subscriber's last write in one go, the bare app writes each
event on its own, so the bare figure is its capacity in writes and opstream's can be many
times higher.

pg-latency: push latency (append -> SSE client receive, p50 and p99) with 100 subscribers of
one operation at 100 and 1,000 events/s offered (and 300 in a full run), as ``bench latency``
measures it on SQLite: on one server, and across two (appended on A, read on B, woken by
``NOTIFY``), beside the bare app. The SQLite goal applies: p99 < 10 ms at 1,000 events/s.

Every run uses a fresh schema (``bench_<pid>_<n>``), dropped at the end; PostgreSQL's own
configuration is left as it is (the default: ``synchronous_commit=on``, ``fsync=on``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from bench.common import HOST, Report, Server, fmt, free_port, median
from bench.fanout import Setup, latency_report, measure
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


# pg-fanout and pg-latency

PRODUCERS = 8  # bench.burst operations on server A, run at once
BURST = 10  # events each emits at once, committed together
BARE_RATE = 300.0  # as in bench.fanout: 300,000 frames/s offered to 1,000 subscribers


def pg_server(name: str, dsn: str, work: Path, *, concurrency: int) -> Server:
    """``opstream serve`` on the database; with ``concurrency=0``, an API-only server.

    An API-only server is started without the bench kinds as well: ``serve`` still runs a
    worker with ``--concurrency 0`` today, and it must not claim the tickers meant for A."""
    port = free_port()
    handlers = ["--handlers", "bench.handlers"] if concurrency else []
    argv = [
        sys.executable, "-m", "opstream.app.cli.main", "serve", "--host", HOST, "--port", str(port),
        "--database", dsn, *handlers, "--concurrency", str(concurrency),
        "--log-level", "warning",
    ]  # fmt: skip
    return Server(name, argv, port, work / f"{name}.log")


@contextlib.contextmanager
def pg_servers(base: str, two: bool, work: Path) -> Iterator[tuple[Server, Server]]:
    """On a fresh schema: server A, which runs the handlers, and the server subscribers read
    (an API-only server B with ``two``, else A itself). A ``bench.fanout.Setup``."""
    with fresh_schema(base) as dsn, contextlib.ExitStack() as stack:
        a = stack.enter_context(pg_server("pg-a", dsn, work, concurrency=PRODUCERS))
        b = stack.enter_context(pg_server("pg-b", dsn, work, concurrency=0)) if two else a
        yield a, b


def run_fanout(quick: bool = False, repeat: int | None = None) -> Report:
    base = _require()
    report = Report("pg-fanout")
    repeat = repeat or (1 if quick else 3)
    n = 1000
    seconds, warmup = (4.0, 1.0) if quick else (8.0, 2.0)
    rate = 5000.0  # offered per operation: more than its commits take
    plan = {"n": n, "operations": PRODUCERS, "rate": rate, "pad": PAD, "seconds": seconds,
            "warmup": warmup, "count": int(rate * (seconds + warmup + 3)),
            "kind": "bench.burst", "params": {"burst": BURST}}  # fmt: skip
    bare = {**plan, "rate": BARE_RATE, "count": int(BARE_RATE * (seconds + warmup + 3))}
    report.say(
        f"PostgreSQL fan-out capacity: {n} subscribers spread over the streams of "
        f"{PRODUCERS} operations whose handlers append on server A ({rate:g} events/s offered "
        f"each, {BURST} at a time), read on server B, and on A alone; the bare app sends "
        f"{BARE_RATE:g} events/s to {n} subscribers; {seconds:g} s measured after "
        f"{warmup:g} s, {repeat} runs"
    )
    runs: list[dict[str, float]] = []
    for r in range(repeat):
        row = _figures("bare", measure("bare", bare))
        for label, two in (("two", True), ("one", False)):
            got = measure("operation", plan, functools.partial(pg_servers, base, two))
            row.update(_figures(label, got))
            if got.get("late"):
                report.say(f"  ({label}: subscribers connected after the producers began)")
        runs.append(row)
        report.say(f"  run {r + 1}:")
        _say_fanout(report, row, n)
    two_ratio = median([x["two"] / x["bare"] for x in runs])
    one_ratio = median([x["one"] / x["bare"] for x in runs])
    report.data.update(runs=runs, two_vs_bare=two_ratio, one_vs_bare=one_ratio)
    report.say("  median:")
    _say_fanout(report, {key: median([x[key] for x in runs]) for key in runs[0]}, n)
    report.verdict("two servers, received on B, vs bare", two_ratio, ">= 0.8", two_ratio >= 0.8)
    report.verdict("one server vs bare", one_ratio, ">= 0.8", one_ratio >= 0.8)
    report.say(
        "      (events/s, not writes: opstream writes each subscriber all it is behind by at "
        "once, the bare app one write per event; B is at capacity when a subscriber receives "
        "less than was appended)"
    )
    return report


def _figures(label: str, got: dict[str, Any]) -> dict[str, float]:
    """One measurement's events/s received and appended, and each process's share of a core."""
    wall = got["wall"]
    return {
        label: got["events_per_s"],
        f"{label}_appended": got["appended_per_s"],
        f"{label}_server_cpu": got["server_cpu"] / wall,
        f"{label}_producer_cpu": got["producer_cpu"] / wall,
        f"{label}_load_cpu": got["load_cpu"] / wall,
    }


def _say_fanout(report: Report, row: dict[str, float], n: int) -> None:
    cpu = {
        "two": f"B {row['two_server_cpu']:.0%}, A {row['two_producer_cpu']:.0%}",
        "one": f"A {row['one_server_cpu']:.0%}",
        "bare": f"{row['bare_server_cpu']:.0%}",
    }
    for label, name in (("two", "two servers, on B"), ("one", "A alone")):
        report.say(
            f"    {name}: {fmt(row[label], 'ev/s')}, {row[label] / row['bare']:.2f} x bare; "
            f"received {fmt(row[label] / n)} of {fmt(row[f'{label}_appended'] / PRODUCERS)} "
            f"appended/s per subscriber; CPU {cpu[label]}, client {row[f'{label}_load_cpu']:.0%}"
        )
    report.say(
        f"    bare: {fmt(row['bare'], 'ev/s')}; CPU {cpu['bare']}, client "
        f"{row['bare_load_cpu']:.0%}"
    )


def run_latency(quick: bool = False, repeat: int | None = None) -> Report:
    base = _require()
    setups: dict[str, Setup] = {
        "one-server": functools.partial(pg_servers, base, False),
        "two-servers": functools.partial(pg_servers, base, True),
    }
    what = "PostgreSQL, synchronous_commit=on; two-servers: appended on A, read on B"
    return latency_report(Report("pg-latency"), setups, what, quick, repeat)
