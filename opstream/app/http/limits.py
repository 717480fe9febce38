"""Per-tenant limits, so one client cannot crowd out the others.

Rates are token buckets kept in this process (a deployment of N servers allows up to N
times the rate); operations in flight are counted in the store, so that limit holds across
processes. Every refusal is a ``429`` with a ``Retry-After`` that, if honoured, succeeds.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

# Poll buckets are kept per (tenant, operation); the least recently used are dropped.
MAX_TRACKED = 100_000
POLL_BURST = 5.0  # status polls one operation may make at once


class LimitExceeded(Exception):
    """A limit refused the request; ``retry_after`` seconds later it would not."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass
class Bucket:
    rate: float
    capacity: float
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """Take one token: 0 when granted, else the seconds until one is available."""
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.capacity
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Limits:
    def __init__(
        self,
        *,
        create_rate: float = 50.0,
        poll_rate: float = 2.0,
        max_streams: int = 1000,
        max_in_flight: int = 1000,
    ) -> None:
        self.create_rate = create_rate
        self.poll_rate = poll_rate
        self.max_streams = max_streams
        self.max_in_flight = max_in_flight
        self._creates: dict[str, Bucket] = {}
        self._polls: OrderedDict[tuple[str, str], Bucket] = OrderedDict()
        self._streams: dict[str, int] = {}

    def creating(self, tenant: str) -> None:
        bucket = self._creates.setdefault(
            tenant, Bucket(self.create_rate, max(1.0, 2 * self.create_rate))
        )
        _check(bucket.take(), f"more than {self.create_rate:g} operations created per second")

    def polling(self, tenant: str, operation_id: str) -> None:
        """A status request. A client that waits ``Retry-After`` (at least 1 s) between
        polls never runs out: the bucket refills faster than that and holds a burst."""
        key = (tenant, operation_id)
        bucket = self._polls.pop(key, None)
        self._forget_refilled_polls()
        bucket = bucket or Bucket(self.poll_rate, POLL_BURST)
        self._polls[key] = bucket  # the most recently polled last
        _check(bucket.take(), "polling faster than Retry-After asks; use ?wait= or the stream")

    def _forget_refilled_polls(self) -> None:
        """Drop the buckets not polled for as long as a full refill takes: a new bucket is
        the same, so an operation polled once no longer costs memory for good."""
        horizon = time.monotonic() - POLL_BURST / self.poll_rate
        polls = self._polls
        while polls:
            oldest = next(iter(polls.values()))
            if oldest.updated > horizon and len(polls) < MAX_TRACKED:
                return
            polls.popitem(last=False)

    def check_streams(self, tenant: str) -> None:
        if self._streams.get(tenant, 0) >= self.max_streams:
            raise LimitExceeded(f"{self.max_streams} streams are already open", 5)

    def stream(self, tenant: str) -> OpenStream:
        """Count an open stream for as long as it streams (checked by ``check_streams``
        before the response starts, so a refusal can still be a 429)."""
        return OpenStream(self._streams, tenant)

    def open_streams(self) -> int:
        return sum(self._streams.values())


class OpenStream:
    """A stream counted against its tenant while the ``with`` block lasts. A class with
    slots rather than a ``@contextmanager``: every idle stream holds one, and a suspended
    generator costs some 400 bytes more."""

    __slots__ = ("_counts", "_tenant")

    def __init__(self, counts: dict[str, int], tenant: str) -> None:
        self._counts, self._tenant = counts, tenant

    def __enter__(self) -> None:
        self._counts[self._tenant] = self._counts.get(self._tenant, 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        self._counts[self._tenant] -= 1
        if not self._counts[self._tenant]:
            del self._counts[self._tenant]


def _check(wait: float, detail: str) -> None:
    if wait > 0:
        raise LimitExceeded(detail, max(1, math.ceil(wait)))
