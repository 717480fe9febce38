"""The pure parts of watching and polling: the merge buffer, backoff, polling hints.

``SeqBuffer`` is the source document's client recipe — buffer, merge, deduplicate, release in
order — as a small state machine over ``merge_by_seq``. It knows nothing of HTTP, so the
async client drives it from the stream and the store, and the tests drive it from lists.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from opstream.events.merge import merge_by_seq
from opstream.events.model import Event


class SeqBuffer:
    """Events of one operation, released exactly once and in ``seq`` order.

    ``cursor`` is the last ``seq`` released. Whatever arrives — live, replayed, twice, out of
    order — is held until everything before it has been released.
    """

    def __init__(self, cursor: int = 0) -> None:
        self.cursor = cursor
        self._held: dict[int, Event] = {}

    @property
    def has_gap(self) -> bool:
        """Something arrived that cannot be released before the hole in front of it is
        filled from the store."""
        return bool(self._held)

    @property
    def held(self) -> int:
        return len(self._held)

    def offer(self, arrived: Iterable[Event]) -> list[Event]:
        """Take arrivals; return those that can be released now, in order."""
        for event in arrived:
            if event.seq > self.cursor:
                self._held.setdefault(event.seq, event)
        merged = merge_by_seq(self.cursor, self._held.values())
        for event in merged.deliver:
            del self._held[event.seq]
        self.cursor = merged.cursor
        return merged.deliver

    def offer_from_store(self, page: list[Event]) -> list[Event]:
        """Take a page the store answered for ``after=cursor``.

        The store is the authority on what still exists: if its first event is beyond
        ``cursor + 1``, the history before it was compacted or has expired, and waiting for
        it would wait forever, so the cursor moves up to it.
        """
        if page:
            first = min(event.seq for event in page)
            if first > self.cursor + 1:
                self.cursor = first - 1
                self._held = {s: e for s, e in self._held.items() if s > self.cursor}
        return self.offer(page)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between ``initial`` and ``maximum`` seconds."""

    initial: float = 0.25
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: bool = True

    def delay(self, failures: int) -> float:
        """The pause before the next attempt, after ``failures`` failures in a row (>= 1)."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))
        if not self.jitter:
            return ceiling
        return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, *, default: float, now: float | None = None) -> float:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds or an HTTP date."""
    if value is None:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return default
    if now is None:
        now = time.time()
    return max(0.0, when.timestamp() - now)
