"""A kind whose events say which process and attempt wrote them, for the HTTP worker tests.

Loaded with ``--handlers tests.e2e.remote_kinds`` by the ``opstream worker --url``
processes that run them; they register the kinds with the server, which imports nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from opstream import Context, Retryable, SyncContext, kind


@kind(
    "probe.steps",
    schema={
        "type": "object",
        "properties": {"steps": {"type": "integer"}, "intervalMs": {"type": "integer"}},
        "required": ["steps", "intervalMs"],
    },
)
async def steps(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    """One ``StepDone`` per step, carrying the writer's pid and attempt."""
    total = int(params["steps"])
    for step in range(1, total + 1):
        await asyncio.sleep(int(params["intervalMs"]) / 1000)
        details = {"pid": os.getpid(), "attempt": ctx.attempt, "step": step}
        await ctx.emit("StepDone", f"step {step} of {total}", details)
    return {"steps": total, "pid": os.getpid()}


@kind("probe.blocking", schema={"type": "object"})
def blocking(ctx: SyncContext, params: dict[str, Any]) -> dict[str, int]:
    """A plain ``def`` handler that blocks: it runs in a thread, reporting without await."""
    for step in range(1, 4):
        time.sleep(0.05)
        ctx.progress(100 * step / 3, f"step {step}")
    return {"thread": 1}


@kind("probe.flaky", schema={"type": "object"}, max_attempts=3)
async def flaky(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    """Fails retryably on its first attempt, succeeds on the next."""
    if ctx.attempt == 1:
        raise Retryable("the bank is busy", error_type="UpstreamBusy")
    return {"attempt": ctx.attempt}
