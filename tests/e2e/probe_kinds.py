"""Kinds that look inside the process that runs them, for the tests of the process itself.

Loaded with ``--handlers tests.e2e.probe_kinds`` by servers and workers under test.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from opstream import Context, kind


@kind(
    "probe.modules",
    schema={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
async def modules(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    """Write the names of every module this process has imported to ``path``."""
    names = sorted(sys.modules)
    await asyncio.to_thread(Path(params["path"]).write_text, "\n".join(names))
    return {"modules": len(names)}


@kind(
    "probe.cancel_task",
    schema={"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]},
)
async def cancel_task(ctx: Context, params: dict[str, Any]) -> dict[str, bool]:
    """Cancel the process's background task named ``task``, as a bug that ended it would."""
    found = [t for t in asyncio.all_tasks() if t.get_name() == params["task"]]
    for task in found:
        task.cancel()
    return {"found": bool(found)}
