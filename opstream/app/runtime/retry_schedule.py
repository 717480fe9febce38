"""When a failed webhook is tried again: the retry schedule and the receiver's
``Retry-After``, as pure functions.

The schedule is the Standard Webhooks example, spanning a little over three days: after
the first (immediate) attempt fails, wait 5 s, then 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
20 h and 24 h; the attempt after the last delay is the last one. It is a setting
(``OPSTREAM_WEBHOOK_RETRY_SCHEDULE``), so tests and impatient deployments use a short one.
Each delay is jittered by up to ±20 %, so receivers that came back from an outage are not
hit by every waiting webhook at the same second.

A ``Retry-After`` on a failed answer (``503``, ``429`` …), in seconds or as an HTTP date, is
a floor: the next attempt comes no earlier than it asks, and no later than the schedule's
longest delay (so a receiver cannot park a webhook for a year), and jitter never brings it
forward.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable

DEFAULT_SCHEDULE = "5s,5m,30m,2h,5h,10h,14h,20h,24h"
JITTER = 0.2
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DELAY = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([smhd]?)$")


def parse_schedule(text: str) -> tuple[float, ...]:
    """The delays in seconds of ``"5s,5m,30m,2h"`` (units ``s``, ``m``, ``h``, ``d``; a bare
    number is seconds). Empty: no retries at all. Raises ``ValueError`` naming the entry."""
    delays = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        match = _DELAY.match(part)
        if match is None:
            raise ValueError(
                f"OPSTREAM_WEBHOOK_RETRY_SCHEDULE: {part!r} is not a delay "
                "(a number with s, m, h or d, e.g. 5s,5m,30m,2h)"
            )
        delays.append(float(match.group(1)) * _UNITS[match.group(2)])
    return tuple(delays)


def parse_retry_after(value: str | None, now_seconds: float) -> float | None:
    """Seconds from now that a ``Retry-After`` header asks for, or ``None`` if it is absent
    or not a delay (RFC 9110: whole seconds, or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a date without a zone is not one
        return None
    return max(0.0, when.timestamp() - now_seconds)


def next_delay_ms(
    failed_attempt: int,
    schedule: tuple[float, ...],
    rand: Callable[[], float],
    retry_after: float | None = None,
) -> int | None:
    """Milliseconds until the attempt after ``failed_attempt`` (1, 2, …), or ``None`` when
    the schedule is used up and the webhook is given up."""
    if failed_attempt < 1 or failed_attempt > len(schedule):
        return None
    base = schedule[failed_attempt - 1]
    delay = base * (1 - JITTER + 2 * JITTER * rand())
    if retry_after is not None and math.isfinite(retry_after):
        ceiling = max(schedule)
        delay = max(delay, min(retry_after, ceiling))
    return int(delay * 1000)


def describe_delay(ms: int) -> str:
    """``1.5 s``, ``5 min``, ``2.5 h``: a delay for people (event messages)."""
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
