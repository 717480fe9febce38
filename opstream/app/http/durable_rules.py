"""The Durable Streams read protocol's rules, as plain functions: no I/O, no Starlette.

An operation's history read as a Durable Stream (PROTOCOL.md of durable-streams, sections
5.5 to 5.8, 8 and 10) needs offsets, time-slot cursors, ETags and caching rules. They live here
so that they can be tested without a server, and ``opstream.app.http.durable`` only reads
the store and writes responses.

Offsets: the token after the event with ``seq = n`` is ``n`` in 16 decimal digits, so
tokens sort lexicographically in ``seq`` order, never collide with the sentinels ``-1``
(the start) and ``now`` (the tail), and contain none of the characters the protocol
forbids. The token ``0000000000000000`` is the start of the stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from opstream.events.model import (
    OPERATION_EXPIRED,
    RESULT_DELETED,
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
    Event,
)

OFFSET_DIGITS = 16
START = "-1"
NOW = "now"

# PROTOCOL.md 10.1: time is cut into 20-second slots counted from this epoch (in seconds).
CURSOR_EPOCH = 1_728_432_000  # 2024-10-09T00:00:00Z
CURSOR_INTERVAL = 20
MAX_JITTER_SECONDS = 3600

# What the protocol's caching section asks for. A page that can never change (it ends
# before the tail, or at the end of a closed stream) is kept long; a long-poll's answer is
# kept as long as the protocol suggests (its cursor is in the key); the tail is revalidated
# every time; an answer about "now" (HEAD, offset=now, a long-poll that timed out) not kept.
IMMUTABLE = "max-age=86400, immutable"
LIVE = "max-age=60, stale-while-revalidate=300"
TAIL = "no-cache"
NO_STORE = "no-store"

# Events that only ever follow an operation's terminal event: they belong to the full
# history (``?after=``, the feed), never to the Durable Stream, which ends at the terminal.
AFTER_END_TYPES = frozenset({WEBHOOK_DELIVERED, WEBHOOK_FAILED, RESULT_DELETED, OPERATION_EXPIRED})


class BadOffset(ValueError):
    """An ``offset`` that is neither a sentinel nor a token this server hands out."""


def encode_offset(seq: int) -> str:
    """The token of the position after the event ``seq`` (0: the start)."""
    return f"{seq:0{OFFSET_DIGITS}d}"


@dataclass(frozen=True)
class Offset:
    """A parsed ``offset``: ``seq`` is the last event the reader has (``None`` for ``now``)."""

    seq: int | None
    explicit_start: bool = False


def parse_offset(raw: str | None) -> Offset:
    """``-1`` or absent: from the start; ``now``: the tail; else a token of ours."""
    if raw is None or raw == START:
        return Offset(0, explicit_start=True)
    if raw == NOW:
        return Offset(None)
    if len(raw) != OFFSET_DIGITS or not raw.isascii() or not raw.isdigit():
        raise BadOffset(f"offset {raw!r} is not -1, now, or an offset this server handed out")
    return Offset(int(raw))


def clip(events: Sequence[Event]) -> tuple[list[Event], bool]:
    """The part of ``events`` (consecutive, in ``seq`` order) that belongs to the stream,
    and whether the stream is closed at its end: it ends with the terminal event, and an
    event that only follows the terminal one means the terminal one came before them."""
    kept: list[Event] = []
    for event in events:
        if event.type in AFTER_END_TYPES:
            return kept, True
        kept.append(event)
        if event.is_terminal:
            return kept, True
    return kept, False


def current_interval(now: float) -> int:
    return int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)


def response_cursor(client_cursor: str | None, offset: str, now: float) -> str:
    """The ``Stream-Cursor`` of a live answer (PROTOCOL.md 10.1): the current time slot, or,
    when the client already holds that slot or a later one, a later slot.

    The protocol asks for random jitter of 1 to 3,600 s there. Ours is derived from the
    client's cursor and offset instead of drawn at random: still spread over the same
    range, but every watcher waiting at one offset with one cursor moves to the same next
    cursor, so a cache keeps collapsing them into one origin request."""
    interval = current_interval(now)
    if client_cursor is None or not client_cursor.isdigit():
        return str(interval)
    held = int(client_cursor)
    if held < interval:
        return str(interval)
    digest = hashlib.sha256(f"{held}:{offset}".encode()).digest()
    jitter = 1 + int.from_bytes(digest[:4], "big") % MAX_JITTER_SECONDS
    return str(held + max(1, -(-jitter // CURSOR_INTERVAL)))


def etag(operation_id: str, start: str, end: str, closed: bool) -> str:
    """``"{stream}:{start}:{end}[:c]"``: it changes when the stream closes (PROTOCOL.md 10.1)."""
    return f'"{operation_id}:{start}:{end}{":c" if closed else ""}"'


def cache_control(policy: str, *, shared: bool) -> str:
    """``policy`` made ``public`` for everyone's streams or ``private`` for a tenant's."""
    if policy in (NO_STORE, TAIL):
        return policy
    return f"{'public' if shared else 'private'}, {policy}"


def catchup_policy(*, up_to_date: bool, closed: bool, from_start_sentinel: bool) -> str:
    """How long a catch-up page may be kept.

    A page that stops short of the tail or ends a closed stream never changes. The tail of
    an open stream does. A page asked for with ``-1`` may start elsewhere once retention
    compacts the history, so it is kept no longer than the protocol's default."""
    if up_to_date and not closed:
        return TAIL
    return LIVE if from_start_sentinel else IMMUTABLE


def control_event(
    next_offset: str, cursor: str | None, *, up_to_date: bool, closed: bool
) -> dict[str, object]:
    """The body of an SSE ``control`` event (PROTOCOL.md 5.8)."""
    body: dict[str, object] = {"streamNextOffset": next_offset}
    if closed:
        body["streamClosed"] = True
        body["upToDate"] = True
    else:
        if cursor is not None:
            body["streamCursor"] = cursor
        if up_to_date:
            body["upToDate"] = True
    return body
