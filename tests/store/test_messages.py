"""What a handler reports reads back the same from every store: one line of text, no control
characters (PostgreSQL's text cannot hold NUL; SQLite's can), details exactly as given."""

from __future__ import annotations

from opstream.app.context import Context
from opstream.events.store import EventStore, Lease

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
