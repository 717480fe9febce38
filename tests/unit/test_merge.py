"""The merge of replayed and live events: duplicates, reordering and gaps."""

from __future__ import annotations

from opstream.events.merge import merge_by_position, merge_by_seq, unique_sorted
from opstream.events.model import Event


def ev(seq: int, position: int | None = None) -> Event:
    return Event("op_x", seq, position if position is not None else seq * 10, "T", "", 0, {})


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


def test_delivers_what_continues_the_cursor() -> None:
    merged = merge_by_seq(2, [ev(3), ev(4)])
    assert seqs(merged.deliver) == [3, 4] and merged.cursor == 4 and not merged.gap


def test_drops_duplicates_and_what_was_already_delivered() -> None:
    merged = merge_by_seq(2, [ev(1), ev(2), ev(3), ev(3), ev(4), ev(2)])
    assert seqs(merged.deliver) == [3, 4] and merged.cursor == 4


def test_reorders_what_arrives_out_of_order() -> None:
    merged = merge_by_seq(0, [ev(3), ev(1), ev(2)])
    assert seqs(merged.deliver) == [1, 2, 3] and not merged.gap


def test_stops_at_a_gap_and_says_so() -> None:
    merged = merge_by_seq(1, [ev(2), ev(4), ev(5)])
    assert seqs(merged.deliver) == [2] and merged.cursor == 2 and merged.gap


def test_a_gap_right_at_the_cursor_delivers_nothing() -> None:
    merged = merge_by_seq(5, [ev(7)])
    assert merged.deliver == [] and merged.cursor == 5 and merged.gap


def test_nothing_new_is_not_a_gap() -> None:
    merged = merge_by_seq(5, [ev(4), ev(5)])
    assert merged.deliver == [] and merged.cursor == 5 and not merged.gap


def test_positions_may_skip_unless_the_source_is_contiguous() -> None:
    arrived = [ev(1, 11), ev(2, 15)]
    loose = merge_by_position(10, arrived, contiguous=False)
    assert [e.position for e in loose.deliver] == [11, 15] and loose.cursor == 15
    strict = merge_by_position(10, arrived, contiguous=True)
    assert [e.position for e in strict.deliver] == [11] and strict.gap


def test_unique_sorted_keeps_the_first_of_each_key() -> None:
    first, again = ev(1, 5), ev(1, 5)
    result = unique_sorted([ev(2, 6), first, again], key=lambda e: e.seq)
    assert [e.seq for e in result] == [1, 2] and result[0] is first


def test_a_batch_that_continues_the_cursor_is_taken_as_it_is() -> None:
    batch = [ev(3), ev(4), ev(5)]
    merged = merge_by_seq(2, batch)
    assert merged.deliver == batch and merged.cursor == 5 and not merged.gap
    # ...but not when it does not: the slow path sorts, drops and stops at the gap.
    assert seqs(merge_by_seq(2, [ev(3), ev(5), ev(4)]).deliver) == [3, 4, 5]
    assert seqs(merge_by_seq(3, batch).deliver) == [4, 5]
