"""The Durable Streams rules without a server: offsets, cursors, ETags, caching, the end."""

from __future__ import annotations

import pytest

from opstream.app.http import durable_rules as rules
from opstream.events.model import Event

NOW = rules.CURSOR_EPOCH + 1_000 * rules.CURSOR_INTERVAL + 5  # inside time slot 1000


def event(seq: int, type_: str = "ProgressUpdated") -> Event:
    return Event(
        operation_id="op_1",
        seq=seq,
        position=seq,
        type=type_,
        message="",
        happened_at=0,
        details={},
    )


def test_offsets_sort_lexicographically_in_seq_order() -> None:
    seqs = [0, 1, 2, 9, 10, 99, 100, 12345, 10**15]
    tokens = [rules.encode_offset(seq) for seq in seqs]
    assert sorted(tokens) == tokens
    assert [rules.parse_offset(token).seq for token in tokens] == seqs
    for token in tokens:
        assert token not in (rules.START, rules.NOW)
        assert not set(token) & set(",&=?/")


def test_sentinels_and_bad_offsets() -> None:
    assert rules.parse_offset(None) == rules.Offset(0, explicit_start=True)
    assert rules.parse_offset("-1") == rules.Offset(0, explicit_start=True)
    assert rules.parse_offset("now").seq is None
    for bad in ("", "5", "-2", "abc", "00000000000000x1", "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦"):
        with pytest.raises(rules.BadOffset):
            rules.parse_offset(bad)


def test_the_stream_ends_at_the_terminal_event() -> None:
    running = [event(3), event(4)]
    assert rules.clip(running) == (running, False)
    done = [event(5), event(6, "OperationSucceeded"), event(7, "WebhookDelivered")]
    assert rules.clip(done) == (done[:2], True)
    # Read from the terminal event on: only what follows it, so the stream is over.
    assert rules.clip([event(7, "WebhookDelivered"), event(8, "ResultDeleted")]) == ([], True)


def test_cursor_is_the_time_slot_and_never_goes_back() -> None:
    assert rules.response_cursor(None, "x", NOW) == "1000"
    assert rules.response_cursor("999", "x", NOW) == "1000"
    later = int(rules.response_cursor("1000", "x", NOW))
    assert 1000 < later <= 1000 + rules.MAX_JITTER_SECONDS // rules.CURSOR_INTERVAL
    ahead = int(rules.response_cursor("1200", "x", NOW))
    assert ahead > 1200
    # Watchers with the same cursor at the same offset move together: one cache key.
    assert rules.response_cursor("1000", "x", NOW) == rules.response_cursor("1000", "x", NOW)
    assert rules.response_cursor("junk", "x", NOW) == "1000"


def test_etag_changes_when_the_stream_closes() -> None:
    open_ = rules.etag("op_1", "-1", rules.encode_offset(6), closed=False)
    closed = rules.etag("op_1", "-1", rules.encode_offset(6), closed=True)
    assert open_ != closed and open_.startswith('"') and closed.endswith(':c"')


def test_caching_policy() -> None:
    tail = rules.catchup_policy(up_to_date=True, closed=False, from_start_sentinel=False)
    assert tail == rules.TAIL
    middle = rules.catchup_policy(up_to_date=False, closed=False, from_start_sentinel=False)
    end = rules.catchup_policy(up_to_date=True, closed=True, from_start_sentinel=False)
    assert middle == end == rules.IMMUTABLE
    start = rules.catchup_policy(up_to_date=False, closed=False, from_start_sentinel=True)
    assert start == rules.LIVE
    assert rules.cache_control(rules.IMMUTABLE, shared=True).startswith("public, ")
    assert rules.cache_control(rules.IMMUTABLE, shared=False).startswith("private, ")
    assert rules.cache_control(rules.NO_STORE, shared=True) == "no-store"
    assert rules.cache_control(rules.TAIL, shared=False) == "no-cache"


def test_control_events() -> None:
    live = rules.control_event("0000000000000003", "1000", up_to_date=True, closed=False)
    assert live == {
        "streamNextOffset": "0000000000000003",
        "streamCursor": "1000",
        "upToDate": True,
    }
    end = rules.control_event("0000000000000009", "1000", up_to_date=False, closed=True)
    assert end == {"streamNextOffset": "0000000000000009", "streamClosed": True, "upToDate": True}
