"""The SSE body: every event's frame once, in order, however the batches are cut into sends.

A batch normally goes out as one chunk; a big one (a replayed page) goes out as two, its last
frame alone, so that an idle stream holds one frame rather than the page. Bugs these guard
against: a frame lost, repeated or reordered at that cut, and the stream not counted (or not
uncounted) against its tenant's open streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from opstream.app.http.limits import LimitExceeded, Limits
from opstream.app.http.sse import RETRY, SPLIT_ABOVE, event_frame, frames
from opstream.events.model import Event


def ev(seq: int, pad: int = 0) -> Event:
    return Event("op_x", seq, 100 + seq, "T", "", 0, {"pad": "x" * pad})


async def batches_of(*batches: list[Event]) -> AsyncIterator[list[Event]]:
    for batch in batches:
        yield batch


async def body(*batches: list[Event], cursor: str = "seq") -> tuple[list[bytes], Limits]:
    limits = Limits()
    svc: Any = SimpleNamespace(limits=limits)
    who: Any = SimpleNamespace(tenant="acme")
    chunks = []
    async for chunk in frames(svc, who, batches_of(*batches), cursor, b"prelude\n\n"):
        chunks.append(chunk)
        assert limits.open_streams() == 1
    return chunks, limits


async def test_each_batch_is_one_chunk_of_its_frames_in_order() -> None:
    first, second = [ev(1), ev(2)], [ev(3)]
    chunks, limits = await body(first, second)
    assert chunks == [
        RETRY + b"prelude\n\n",
        event_frame(ev(1), "seq") + event_frame(ev(2), "seq"),
        event_frame(ev(3), "seq"),
    ]
    assert limits.open_streams() == 0


async def test_a_big_batch_sends_its_last_frame_on_its_own() -> None:
    page = [ev(seq, pad=200) for seq in range(1, 201)]
    assert sum(len(event_frame(e, "position")) for e in page) > SPLIT_ABOVE
    chunks, _ = await body(page, [ev(201)], cursor="position")
    assert chunks[1:] == [
        b"".join(event_frame(e, "position") for e in page[:-1]),
        event_frame(page[-1], "position"),
        event_frame(ev(201), "position"),
    ]
    assert b"".join(chunks[1:]).count(b"id: ") == 201


def test_open_streams_are_limited_per_tenant_and_freed_when_they_end() -> None:
    limits = Limits(max_streams=2)
    with limits.stream("acme"), limits.stream("acme"):
        with pytest.raises(LimitExceeded):
            limits.check_streams("acme")
        limits.check_streams("beta")  # another tenant has its own count
        assert limits.open_streams() == 2
    limits.check_streams("acme")
    with pytest.raises(RuntimeError), limits.stream("acme"):
        raise RuntimeError("the stream broke")
    assert limits.open_streams() == 0, "a stream that fails is uncounted too"
