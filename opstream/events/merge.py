"""The merge of replayed and live events: exactly once, in order, no gaps.

This is the client recipe of the source documents as plain functions: a subscriber has
delivered everything up to ``cursor``; whatever arrives next — from a replay, from live
fan-out, twice, out of order — is sorted, stripped of duplicates and released only while it
continues the cursor without a hole. A hole means: read the store from the cursor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from opstream.events.model import Event

T = TypeVar("T")


@dataclass(frozen=True)
class Merged:
    """What a batch of arrivals allows: events to deliver now, the new cursor, and whether
    something is missing before the rest (so the caller must read the store)."""

    deliver: list[Event]
    cursor: int
    gap: bool


def merge_by_seq(cursor: int, arrived: Iterable[Event]) -> Merged:
    """Merge one operation's events after ``cursor`` (its last delivered ``seq``).

    ``seq`` has no holes, so anything beyond ``cursor + 1`` that cannot be chained is a gap.
    """
    return _merge(cursor, arrived, key=lambda event: event.seq, contiguous=True)


def merge_by_position(cursor: int, arrived: Iterable[Event], *, contiguous: bool) -> Merged:
    """Merge store-wide events after ``cursor`` (the last delivered ``position``).

    Positions may skip in general; ``contiguous`` says whether this source promises they do
    not (a live hand-over does, within one writer), in which case a jump is a gap.
    """
    return _merge(cursor, arrived, key=lambda event: event.position, contiguous=contiguous)


def _merge(
    cursor: int, arrived: Iterable[Event], *, key: Callable[[Event], int], contiguous: bool
) -> Merged:
    if isinstance(arrived, list) and _continues(cursor, arrived, key):
        # The common case, a committed batch right after the cursor: every one of a
        # thousand subscribers takes it as it is, without sorting it again.
        return Merged(arrived, key(arrived[-1]), False)
    deliver: list[Event] = []
    gap = False
    for event in unique_sorted(arrived, key):
        number = key(event)
        if number <= cursor:
            continue
        if contiguous and number != cursor + 1:
            gap = True
            break
        deliver.append(event)
        cursor = number
    return Merged(deliver, cursor, gap)


def _continues(cursor: int, events: list[Event], key: Callable[[Event], int]) -> bool:
    """``events`` are exactly ``cursor + 1, cursor + 2, ...``, in order."""
    expected = cursor + 1
    for event in events:
        if key(event) != expected:
            return False
        expected += 1
    return bool(events)


def unique_sorted(items: Iterable[T], key: Callable[[T], int]) -> Sequence[T]:
    """``items`` in ascending ``key`` order, the first of each key kept."""
    seen: dict[int, T] = {}
    for item in items:
        seen.setdefault(key(item), item)
    return [seen[k] for k in sorted(seen)]
