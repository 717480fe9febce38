"""A kind whose events say which process and attempt wrote them, for the HTTP worker tests.

Loaded with ``--handlers tests.e2e.remote_kinds`` by the server (so that it knows the kind)
and by the ``opstream worker --url`` processes that run it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from opstream import Context, kind


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
