"""SQLite's schema: a file from an earlier release is migrated in place, and the sweeper's
and the webhook claimer's queries use indexes, not scans."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from opstream.events import model as m
from opstream.events.errors import StoreError
from opstream.events.sqlite import SQLiteStore
from opstream.events.sqlite import queries as sqlite
from opstream.events.sqlite.schema import MIGRATIONS, SCHEMA
from opstream.events.store import Idempotency, Retention

KIND = "demo.countdown"
FOREVER = 10**15  # the old file's times are from 1970


def old_file(path: Path) -> None:
    """A database as the release before tenants wrote it: one finished operation."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    state = {
        "id": "op_old",
        "kind": KIND,
        "params": {},
        "status": "cancelled",
        "created_at": 1000,
        "updated_at": 2000,
        "last_seq": 2,
        "callback_url": None,
        "started_at": None,
        "finished_at": 2000,
        "attempt": 0,
        "progress": {"percent": 0.0, "stage": None, "message": "cancelled",
                     "estimated_time_remaining": None},
        "error": None,
        "result": None,
        "result_deleted": False,
        "deleted": False,
        "expired": False,
        "progress_updates": 0,
    }  # fmt: skip
    conn.execute(
        "INSERT INTO operations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("op_old", KIND, "cancelled", 0, 2, None, None, orjson.dumps(state)),
    )
    conn.executemany(
        "INSERT INTO events (operation_id, seq, type, kind, message, happened_at, details) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            ("op_old", 1, m.OPERATION_QUEUED, KIND, "queued", 1000, b'{"kind":"demo.countdown"}'),
            ("op_old", 2, m.OPERATION_CANCELLED, KIND, "cancelled", 2000, b"{}"),
        ],
    )
    conn.commit()
    conn.close()


async def test_a_file_from_the_release_before_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_file(path)
    async with SQLiteStore(path) as store:
        op = await store.get("op_old")
        assert op.tenant == "" and op.finished_at == 2000
        assert [e.tenant for e in await store.read("op_old")] == ["", ""]
        new = await store.create("op_new", KIND, {}, tenant="t", idempotency=Idempotency("k", "f"))
        assert new.operation.tenant == "t"
        swept = await store.sweep(Retention(0, 0, FOREVER, FOREVER))
        assert [e.operation_id for e in swept.events] == ["op_old"], "finished_at was filled in"
        assert (await store.history_start("op_old")).first_seq == 2
    async with SQLiteStore(path) as store:  # opening again changes nothing
        assert (await store.get("op_new")).tenant == "t"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATIONS[-1][0]
    conn.close()


async def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with SQLiteStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {MIGRATIONS[-1][0] + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore(path).open()


PLANS = {
    "expire": (
        "SELECT id FROM operations WHERE finished_at IS NOT NULL AND expired = 0 "
        "AND finished_at <= ? ORDER BY finished_at, id LIMIT ?",
        (0, 10),
        "operations_to_expire",
    ),
    "compact": (
        "SELECT id FROM operations WHERE finished_at IS NOT NULL AND first_seq = 1 "
        "AND finished_at <= ? ORDER BY finished_at, id LIMIT ?",
        (0, 10),
        "operations_to_compact",
    ),
    "forget": (
        "SELECT id FROM operations WHERE finished_at IS NOT NULL AND finished_at <= ? "
        "ORDER BY finished_at, id LIMIT ?",
        (0, 10),
        "operations_by_finish",
    ),
    "webhooks": (
        "SELECT id, state FROM operations WHERE webhook_due_at IS NOT NULL "
        "AND webhook_due_at <= ? ORDER BY webhook_due_at, id LIMIT ?",
        (0, 10),
        "operations_by_webhook",
    ),
    "keys": (
        "SELECT rowid FROM idempotency WHERE created_at <= ? ORDER BY created_at LIMIT ?",
        (0, 10),
        "idempotency_by_age",
    ),
    "tenant feed": (
        "SELECT position FROM events WHERE tenant = ? AND position > ? ORDER BY position LIMIT ?",
        ("t", 0, 10),
        "events_by_tenant",
    ),
    "tenant list": (
        "SELECT state FROM operations WHERE tenant = ? ORDER BY id DESC LIMIT ?",
        ("t", 10),
        "operations_by_tenant",
    ),
}


@pytest.mark.parametrize("name", sorted(PLANS))
async def test_retention_and_tenant_queries_use_their_index(tmp_path: Path, name: str) -> None:
    sql, params, index = PLANS[name]
    async with SQLiteStore(tmp_path / "plans.db") as store:
        plan = " ".join(await store.explain(sql, params))
    assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_the_writer_keeps_the_projections_of_unfinished_operations_only(
    tmp_path: Path,
) -> None:
    """What bounds the writer's memory in a long run: finished operations are let go."""
    async with SQLiteStore(tmp_path / "kept.db") as store:
        for n in range(3):
            await store.create(f"op_{n}", KIND, {})
        await store.append("op_1", [m.NewEvent(m.OPERATION_CANCELLED, "stop")])
        await store.append("op_2", [m.NewEvent(m.OPERATION_STARTED, "go")])
        assert sorted(store._projections) == ["op_0", "op_2"]


async def test_reads_agree_across_the_indexed_events_and_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interleaved operations, indexed five events at a time: every page of every read, from
    every cursor, is what the history says, whichever side of indexed_through it falls."""
    monkeypatch.setattr(sqlite, "INDEX_EVERY", 5)
    async with SQLiteStore(tmp_path / "index.db") as store:
        ids = ["op_a", "op_b", "op_c"]
        for op in ids:
            await store.create(op, KIND, {})
            await store.append(op, [m.NewEvent(m.OPERATION_STARTED, "go", {"attempt": 1})])
        for n in range(12):
            for op in ids[: 1 + n % 3]:
                await store.append(op, [m.NewEvent("Tick", f"{op} {n}")])
            feed = await store.read_all(limit=1000)
            for op in ids:
                mine = [e for e in feed if e.operation_id == op]
                assert [e.seq for e in mine] == list(range(1, len(mine) + 1))
                for limit in (1, 2, 7, 100):
                    paged: list[m.Event] = []
                    while batch := await store.read(op, after=len(paged), limit=limit):
                        paged += batch
                    assert paged == mine, (op, limit)
                for cursor in range(feed[-1].position + 1):
                    expected = [e for e in mine if e.position > cursor][:3]
                    got = await store.read_all(after=cursor, operation_id=op, limit=3)
                    assert got == expected, (op, cursor)
    conn = sqlite3.connect(tmp_path / "index.db")
    through = conn.execute("SELECT indexed_through FROM meta").fetchone()[0]
    indexed_rows = conn.execute("SELECT count(*) FROM event_index").fetchone()[0]
    conn.close()
    assert through > 0 and indexed_rows == through, "the tail is indexed as it grows"


async def test_a_file_from_release_3_keeps_its_head_and_history(tmp_path: Path) -> None:
    """Migration 4 rebuilds the events table: positions, the head and the histories stay."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA)
    for _, sql in MIGRATIONS[:3]:
        conn.executescript(sql)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO operations (id, kind, status, attempt, last_seq, state) "
        "VALUES ('op_v3', ?, 'queued', 0, 3, ?)",
        (KIND, orjson.dumps({"id": "op_v3", "kind": KIND, "status": "queued", "last_seq": 3})),
    )
    conn.executemany(
        "INSERT INTO events (operation_id, seq, type, kind, message, happened_at, details) "
        "VALUES ('op_v3', ?, 'Tick', ?, ?, 1000, x'7b7d')",
        [(seq, KIND, f"tick {seq}") for seq in (1, 2, 3)],
    )
    conn.execute("DELETE FROM events WHERE seq = 3")  # the newest is gone; the head stays 3
    conn.close()
    async with SQLiteStore(path) as store:
        assert await store.head() == 3
        assert [e.message for e in await store.read("op_v3")] == ["tick 1", "tick 2"]
        assert [e.position for e in await store.read_all(operation_id="op_v3")] == [1, 2]
        created = await store.create("op_new", KIND, {})
        assert created.events[0].position == 4, "positions are never handed out twice"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATIONS[-1][0]
    indexes = [row[1] for row in conn.execute("PRAGMA index_list(events)")]
    assert not any(name.startswith("sqlite_autoindex") for name in indexes), indexes
    assert conn.execute("SELECT count(*) FROM event_index").fetchone()[0] == 2
    conn.close()


@pytest.mark.parametrize("filtered", [False, True])
async def test_one_operations_events_are_found_by_position_never_scanned(
    tmp_path: Path, filtered: bool
) -> None:
    filters = ["kind", "tenant"] if filtered else []
    sql = sqlite.operation_events(sqlite.FEED_CURSOR_SEQ, filters, until=filtered)
    params = {"op": "op_x", "after": 5, "limit": 100, "kind": KIND, "tenant": "t", "until": 9}
    async with SQLiteStore(tmp_path / "plans.db") as store:
        plan = await store.explain(sql, params)
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert not [step for step in plan if "events_by_" in step], plan
    indexed_part = plan[: plan.index("RIGHT")]
    assert not [step for step in indexed_part if "TEMP B-TREE" in step], (
        "the indexed part comes out in seq order and stops at the page's end",
        plan,
    )


async def test_index_entries_whose_events_are_gone_do_not_shorten_a_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a process of release 3 leaves them after its retention deleted events by
    operation_id: a page still holds ``limit`` events when there are that many."""
    monkeypatch.setattr(sqlite, "INDEX_EVERY", 1)
    path = tmp_path / "orphans.db"
    async with SQLiteStore(path) as store:
        await store.create("op_o", KIND, {})
        await store.append("op_o", [m.NewEvent(m.OPERATION_STARTED, "go", {"attempt": 1})])
        for n in range(8):
            await store.append("op_o", [m.NewEvent("Tick", f"tick {n}")])
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("DELETE FROM events WHERE operation_id = 'op_o' AND seq < 6")
        conn.close()
        assert [e.seq for e in await store.read("op_o", limit=3)] == [6, 7, 8]
        page = await store.read_all(after=0, operation_id="op_o", limit=3)
        assert [e.seq for e in page] == [6, 7, 8]


async def test_a_row_moved_under_the_writer_is_planned_again_not_numbered_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Uniqueness of (operation_id, seq) rests on the operations row: a writer whose
    projection is stale (a bug, or a writer that missed another's commit) is caught by the
    row's last_seq and plans again on the database's."""
    async with SQLiteStore(tmp_path / "moved.db") as store:
        await store.create("op_m", KIND, {})
        await store.append("op_m", [m.NewEvent(m.OPERATION_STARTED, "go", {"attempt": 1})])
        stale = store._projections["op_m"]
        await store.append("op_m", [m.NewEvent("Tick", "one")])
        store._projections["op_m"] = stale  # the writer forgets the append it just made
        appended = await store.append("op_m", [m.NewEvent("Tick", "two")])
        assert [e.seq for e in appended.events] == [4]
        assert [e.seq for e in await store.read("op_m")] == [1, 2, 3, 4]
    assert "moved under the writer's projections" in caplog.text


async def test_a_busy_database_fails_a_batch_once_not_once_per_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock past the busy timeout: the batch fails after one
    wait. Retrying its appends one by one (as for one bad append) would wait once each."""
    busy_ms, count = 200, 20
    pragmas = SQLiteStore._pragmas
    monkeypatch.setattr(
        SQLiteStore,
        "_pragmas",
        lambda self: [
            f"PRAGMA busy_timeout = {busy_ms}" if "busy_timeout" in p else p for p in pragmas(self)
        ],
    )
    path = tmp_path / "busy.db"
    async with SQLiteStore(path) as store:
        for n in range(count):
            await store.create(f"op_{n}", "demo.countdown", {})
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(
                    store.append(f"op_{n}", [m.NewEvent(m.WEBHOOK_FAILED, "x")])
                    for n in range(count)
                ),
                return_exceptions=True,
            )
            took = time.monotonic() - started
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert all(isinstance(outcome, StoreError) for outcome in outcomes), outcomes
        assert took < count * busy_ms / 1000 / 4, f"{count} appends took {took:.1f} s"
        appended = await store.append("op_0", [m.NewEvent(m.WEBHOOK_FAILED, "again")])
        assert [e.seq for e in appended.events] == [2], "the writer goes on once it is free"
