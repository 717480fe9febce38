"""A kind the benchmarks drive opstream with: ``bench.ticker`` appends events at a set rate.

Loaded into the real server with ``opstream serve --handlers bench.handlers``; every event is
appended through the handler context, so it takes the real path: store, commit, hub, SSE.
Each event carries the wall-clock time (``t``, ns) just before its append, so a client on the
same machine can measure append-to-receive latency.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from opstream.app.runtime.context import Context
from opstream.app.runtime.kinds import kind

TICKER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 1},
        "rate": {"type": "number", "exclusiveMinimum": 0},
        "startAt": {"type": "number", "description": "epoch seconds to begin at"},
        "pad": {"type": "integer", "minimum": 0, "default": 0},
    },
    "required": ["count", "rate"],
    "additionalProperties": False,
}


@kind("bench.ticker", schema=TICKER_SCHEMA, description="Appends count events at rate per second.")
async def ticker(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    count, rate = int(params["count"]), float(params["rate"])
    pad = "x" * int(params.get("pad", 0))
    await asyncio.sleep(max(0.0, float(params.get("startAt", 0)) - time.time()))
    loop = asyncio.get_running_loop()
    begin = loop.time()
    for i in range(1, count + 1):
        delay = begin + (i - 1) / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await ctx.emit("BenchTick", "tick", {"i": i, "t": time.time_ns(), "pad": pad})
    return {"count": count}


HOLD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "seconds": {"type": "number", "minimum": 0},
        "ticks": {"type": "integer", "minimum": 0, "description": "events to append first"},
    },
    "required": ["seconds"],
    "additionalProperties": False,
}


@kind(
    "bench.hold",
    schema=HOLD_SCHEMA,
    description="Appends ticks events, then runs for seconds without a word.",
)
async def hold(ctx: Context, params: dict[str, Any]) -> dict[str, float]:
    for i in range(1, int(params.get("ticks", 0)) + 1):
        await ctx.emit("BenchTick", "tick", {"i": i, "t": time.time_ns(), "pad": "x" * 64})
    await asyncio.sleep(float(params["seconds"]))
    return {"seconds": float(params["seconds"])}


BURST_SCHEMA: dict[str, Any] = {
    **TICKER_SCHEMA,
    "properties": {
        **TICKER_SCHEMA["properties"],
        "burst": {"type": "integer", "minimum": 1, "description": "events emitted at once"},
    },
    "required": ["count", "rate", "burst"],
}


@kind(
    "bench.burst",
    schema=BURST_SCHEMA,
    description="Appends count events at rate per second, burst of them at once.",
)
async def burst(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    """The ticker with several emits in flight at once: the store commits them together, so
    one operation appends many more events per second than its serial emits could."""
    count, rate, size = int(params["count"]), float(params["rate"]), int(params["burst"])
    pad = "x" * int(params.get("pad", 0))
    await asyncio.sleep(max(0.0, float(params.get("startAt", 0)) - time.time()))
    loop = asyncio.get_running_loop()
    begin = loop.time()
    for first in range(1, count + 1, size):
        delay = begin + (first - 1) / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        ticks = range(first, min(first + size, count + 1))
        await asyncio.gather(
            *(
                ctx.emit("BenchTick", "tick", {"i": i, "t": time.time_ns(), "pad": pad})
                for i in ticks
            )
        )
    return {"count": count}
