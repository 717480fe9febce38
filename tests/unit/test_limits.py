"""The per-operation polling limit: it holds while a client polls too fast, and forgets an
operation once its bucket would have refilled, so memory does not grow with operations."""

from __future__ import annotations

import time

import pytest

from opstream.app.http import limits as limits_module
from opstream.app.http.limits import POLL_BURST, LimitExceeded, Limits


class Clock:
    """time.monotonic that moves only when told. It starts a little ahead of the real one,
    which stamps a new bucket, so that a new bucket is full."""

    def __init__(self) -> None:
        self.now = time.monotonic() + 1.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(limits_module.time, "monotonic", clock)
    return clock


def test_polling_too_fast_is_refused_until_the_bucket_refills(clock: Clock) -> None:
    limits = Limits(poll_rate=2.0)
    for _ in range(int(POLL_BURST)):
        limits.polling("t", "op_1")
    with pytest.raises(LimitExceeded):
        limits.polling("t", "op_1")
    clock.now += 0.5  # one token back at 2 per second
    limits.polling("t", "op_1")


def test_operations_polled_long_ago_are_forgotten(clock: Clock) -> None:
    limits = Limits(poll_rate=2.0)
    for n in range(1000):
        limits.polling("t", f"op_{n}")
    assert len(limits._polls) == 1000, "recent polls are remembered"
    clock.now += POLL_BURST / 2.0 + 0.1  # long enough for any bucket to be full again
    limits.polling("t", "op_new")
    assert list(limits._polls) == [("t", "op_new")]
