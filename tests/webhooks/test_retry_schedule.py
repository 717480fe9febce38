"""The retry schedule (days, as Standard Webhooks suggests), its jitter, and Retry-After."""

from __future__ import annotations

import email.utils

import pytest

from opstream.app.runtime.retry_schedule import (
    describe_delay,
    next_delay_ms,
    parse_retry_after,
    parse_schedule,
)
from opstream.app.runtime.settings import Settings

# The example schedule of the specification, after the immediate first attempt.
SPEC_DELAYS = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)


def test_the_default_is_the_specifications_schedule_over_three_days() -> None:
    schedule = parse_schedule(Settings().webhook_retry_schedule)
    assert schedule == SPEC_DELAYS
    assert sum(schedule) > 3 * 86400  # 75 h 35 min 5 s
    assert Settings().webhook_timeout_seconds == 15.0


def test_schedules_take_units_and_bare_seconds() -> None:
    assert parse_schedule("0.2, 1.5s,2m , 1h,1d") == (0.2, 1.5, 120.0, 3600.0, 86400.0)
    assert parse_schedule("") == ()


@pytest.mark.parametrize("bad", ["5x", "-1s", "soon", "1s,,h"])
def test_an_unusable_schedule_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="OPSTREAM_WEBHOOK_RETRY_SCHEDULE"):
        Settings.from_env({"OPSTREAM_WEBHOOK_RETRY_SCHEDULE": bad})


def test_each_delay_is_jittered_by_at_most_a_fifth() -> None:
    for attempt, base in enumerate(SPEC_DELAYS, start=1):
        assert next_delay_ms(attempt, SPEC_DELAYS, lambda: 0.5) == int(base * 1000)
        assert next_delay_ms(attempt, SPEC_DELAYS, lambda: 0.0) == int(base * 800)
        assert next_delay_ms(attempt, SPEC_DELAYS, lambda: 1.0) == int(base * 1200)


def test_the_attempt_after_the_last_delay_is_the_last() -> None:
    assert next_delay_ms(len(SPEC_DELAYS), SPEC_DELAYS, lambda: 0.5) == 86_400_000
    assert next_delay_ms(len(SPEC_DELAYS) + 1, SPEC_DELAYS, lambda: 0.5) is None
    assert next_delay_ms(1, (), lambda: 0.5) is None, "an empty schedule: one attempt only"


def test_retry_after_is_a_floor_that_jitter_does_not_undercut() -> None:
    assert next_delay_ms(1, SPEC_DELAYS, lambda: 0.0, retry_after=60) == 60_000
    # shorter than the schedule: the schedule wins (Retry-After is "no sooner than")
    assert next_delay_ms(3, SPEC_DELAYS, lambda: 0.5, retry_after=60) == 1_800_000


def test_retry_after_is_bounded_by_the_longest_delay() -> None:
    year = 365 * 86400.0
    assert next_delay_ms(1, SPEC_DELAYS, lambda: 0.5, retry_after=year) == 86_400_000
    assert next_delay_ms(1, (1.0, 60.0), lambda: 0.5, retry_after=year) == 60_000


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(date, now) == 90.0
    past = email.utils.formatdate(now - 90, usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(bad, now) is None


def test_delays_are_described_for_people() -> None:
    assert describe_delay(5_000) == "5.0 s"
    assert describe_delay(300_000) == "5 min"
    assert describe_delay(18_000_000) == "5.0 h"
