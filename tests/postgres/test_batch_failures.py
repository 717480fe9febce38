"""How the PostgreSQL writer fails: a batch that goes wrong refuses only the appends it must,
answers every caller, keeps the writer alive, and never writes an append twice — even when
the connection is lost while a self-committing statement may still commit on the server."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from opstream.events import model as m
from opstream.events.base.writes import creation, outcome_of
from opstream.events.errors import StoreError
from opstream.events.postgres import PostgresStore
from opstream.events.postgres.failures import UNKNOWN_OUTCOME
from opstream.events.store import Appended
from tests.postgres.test_batch_writes import KIND, note, two_stores
from tests.store.backends import postgres_url

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(
    "event",
    [
        m.NewEvent(m.WEBHOOK_FAILED, "a set", {"s": {1, 2}}),  # orjson cannot encode a set
        m.NewEvent(m.WEBHOOK_FAILED, "int key", {1: "one"}),  # nor a non-str key
        m.NewEvent(m.WEBHOOK_FAILED, "lone \ud800 surrogate"),  # nor a lone surrogate
    ],
    ids=["set", "int-key", "surrogate"],
)
async def test_an_append_that_cannot_be_encoded_fails_alone(
    pg_schema: str, event: m.NewEvent
) -> None:
    """The bad append is refused with the cause; the writer lives on, and so do the
    appends that shared its batch."""
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, {})
        await store.create("op_2", KIND, {})
        await store.append("op_1", [note(0)])  # remembered, clock anchored: sent as a batch
        await store.append("op_2", [note(0)])
        bad, good = await asyncio.wait_for(
            asyncio.gather(
                store.append("op_1", [event]),
                store.append("op_2", [note(1)]),
                return_exceptions=True,
            ),
            5,
        )
        assert isinstance(bad, StoreError), bad
        assert "not committed" in str(bad)
        assert isinstance(good, Appended), good
        assert [e.seq for e in good.events] == [3]
        assert store._writer_task is not None and not store._writer_task.done()
        appended = await asyncio.wait_for(store.append("op_1", [note(1)]), 5)
        assert [e.seq for e in appended.events] == [3]


async def test_a_create_racing_another_process_does_not_sink_its_neighbours(
    pg_schema: str,
) -> None:
    """Another process creates an id after this one's locks were read: the create is told
    the operation exists, and the append batched with it is written."""
    first, second = await two_stores(pg_schema)
    try:
        await first.create("op_1", KIND, {})
        original = first._lock_currents
        raced = False

        async def lock_then_race(conn: Any, ids: list[str]) -> Any:
            nonlocal raced
            result = await original(conn, ids)
            if "dup" in ids and not raced:  # the other process creates it now, once
                raced = True
                await second.create("dup", KIND, {})
            return result

        first._lock_currents = lock_then_race  # type: ignore[method-assign]
        created, appended = await asyncio.gather(
            first.create("dup", KIND, {}),
            first.append("op_1", [note(0)]),
            return_exceptions=True,
        )
    finally:
        await first.close()
        await second.close()
    assert raced
    assert isinstance(appended, Appended), appended
    assert isinstance(created, StoreError)
    assert "already exists" in str(created)


@pytest.mark.parametrize("expected_seq", [None, 2])
async def test_a_batch_whose_connection_is_lost_is_not_written_twice(
    pg_schema: str, expected_seq: int | None
) -> None:
    """The client loses the connection while its statement waits for a row lock; the
    statement carries on and commits. The writer must not retry it: the caller hears that
    the outcome is unknown (or of the append as written), and it is written once."""
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, {})
        await store.append("op_1", [note(0)])  # remembered: the next append is sent
        blocker = await asyncpg.connect(postgres_url(), server_settings={"search_path": pg_schema})
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT 1 FROM opstream_operations WHERE id = 'op_1' FOR UPDATE")
            task = asyncio.create_task(store.append("op_1", [note(1)], expected_seq=expected_seq))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if store._in_flight:
                    break
            assert store._in_flight, "the append was not sent as a batch"
            await asyncio.sleep(0.3)  # the statement now waits for the row lock
            conn = store._writer_conns[store._in_flight[0].connection]
            conn.terminate()  # the client loses the connection
            await asyncio.sleep(0.3)
            await tx.commit()  # the lock goes; the orphaned statement carries on
            outcome: object
            try:
                outcome = await asyncio.wait_for(task, 10)
            except StoreError as exc:
                outcome = exc
        finally:
            await blocker.close()
        await asyncio.sleep(0.3)  # let the orphaned statement finish
        events = await store.read("op_1")
        after = await store.append("op_1", [note(2)])  # the writer re-reads what it forgot
    assert [e.details.get("n") for e in events[1:]] in ([0], [0, 1]), "written at most once"
    if isinstance(outcome, Appended):
        assert [e.seq for e in outcome.events] == [3]
    else:
        assert isinstance(outcome, StoreError), outcome
        assert UNKNOWN_OUTCOME in str(outcome)
    assert [e.seq for e in after.events] == [len(events) + 1]


async def test_a_locked_batch_whose_connection_is_lost_is_not_retried(pg_schema: str) -> None:
    """A batch written under locks loses its connection (perhaps during its COMMIT): its
    appends are not tried again one by one, and their callers hear that the outcome is
    unknown."""
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        original = store._write_appends
        calls = 0

        async def lose(conn: Any, jobs: Any, currents: Any, now: Any = None) -> Any:
            nonlocal calls
            calls += 1
            await original(conn, jobs, currents, now)
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")

        store._write_appends = lose  # type: ignore[method-assign]
        jobs = [creation(f"op_{n}", KIND, {}, callback_url=None, tenant="", idempotency=None)
                for n in (1, 2)]  # fmt: skip
        await store._commit_locked(jobs)
        store._write_appends = original  # type: ignore[method-assign]
        for job in jobs:
            with pytest.raises(StoreError, match=UNKNOWN_OUTCOME):
                await outcome_of(job.future)
        assert calls == 1
        created = await store.create("op_3", KIND, {})
        assert created.operation.id == "op_3"


async def test_the_writer_survives_a_failure_answering_a_batch(pg_schema: str) -> None:
    """A failure where none is expected (a bug) answers the callers of that batch — as
    perhaps committed — and the writer goes on with the next one."""
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, {})
        original = store._answer

        def broken(outcomes: Any) -> None:
            store._answer = original  # type: ignore[method-assign]
            raise RuntimeError("a bug")

        store._answer = broken  # type: ignore[method-assign]
        with pytest.raises(StoreError, match="may have been committed"):
            await asyncio.wait_for(store.append("op_1", [note(0)]), 5)
        assert store._writer_task is not None and not store._writer_task.done()
        appended = await asyncio.wait_for(store.append("op_1", [note(1)]), 5)
        assert appended.events[0].details == {"n": 1}
