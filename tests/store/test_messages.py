"""What a handler reports reads back the same from every store: one line of text, no control
characters (PostgreSQL's text cannot hold NUL; SQLite's can), details exactly as given."""

from __future__ import annotations

import asyncio

import pytest

from opstream.app.runtime.context import Context
from opstream.events import model as m
from opstream.events.errors import StoreError
from opstream.events.store import Appended, EventStore, Lease

KIND = "demo.countdown"


async def test_control_characters_in_a_report_become_spaces(store: EventStore) -> None:
    await store.create("op_nul", KIND, {})
    claimed = await store.claim("worker-a", [KIND], 30_000)
    assert claimed is not None
    ctx = Context(
        store, Lease("op_nul", "worker-a", claimed.operation.attempt), kind=KIND, params={}
    )
    await ctx.progress(50, "half\x00way\tthere\r\nnow\x7f!")
    await ctx.emit("Checked", "a\x00b", {"raw": "keeps\x00its NUL"})
    await ctx.flush()
    events = (await store.read("op_nul"))[-2:]
    assert [e.message for e in events] == ["half way there now !", "a b"]
    assert events[1].details == {"raw": "keeps\x00its NUL"}
    assert (await store.get("op_nul")).progress.message == "a b"


async def test_a_lone_surrogate_in_a_message_is_replaced(store: EventStore) -> None:
    ctx = await _running(store, "op_sur")
    await ctx.progress(10, "half \ud800 way")
    await ctx.flush()
    assert (await store.read("op_sur"))[-1].message == "half ? way"


async def test_details_that_are_not_json_are_refused_where_the_handler_emits(
    store: EventStore,
) -> None:
    ctx = await _running(store, "op_set")
    with pytest.raises(ValueError, match="not JSON"):
        await ctx.emit("Checked", "a set", {"ids": {1, 2}})
    await ctx.emit("Checked", "a list", {"ids": [1, 2]})
    await ctx.flush()
    assert (await store.read("op_set"))[-1].details == {"ids": [1, 2]}


async def test_an_append_that_cannot_be_written_does_not_sink_its_neighbours(
    store: EventStore,
) -> None:
    """Through the store API (no Context to check first): appends committed together."""
    for name in ("op_good", "op_bad"):
        await store.create(name, KIND, {})
        await store.append(name, [m.NewEvent(m.OPERATION_STARTED, "go", {"attempt": 1})])
    good = store.append("op_good", [m.NewEvent("Checked", "fine", {"n": 1})])
    bad = store.append("op_bad", [m.NewEvent("Checked", "a set", {"s": {1}})])
    outcomes = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(outcomes[0], Appended), outcomes[0]
    assert isinstance(outcomes[1], StoreError), outcomes[1]
    assert [e.message for e in await store.read("op_good")][-1] == "fine"
    again = await store.append("op_bad", [m.NewEvent("Checked", "fixed", {"s": [1]})])
    assert again.events[0].seq == 3, "the writer goes on"


async def _running(store: EventStore, operation_id: str) -> Context:
    await store.create(operation_id, KIND, {})
    claimed = await store.claim("worker-a", [KIND], 30_000)
    assert claimed is not None
    lease = Lease(operation_id, "worker-a", claimed.operation.attempt)
    return Context(store, lease, kind=KIND, params={})
