"""The shipped kinds, for the quick start, the dashboard and the tests."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from collections import defaultdict
from typing import Any

from opstream.app.runtime.context import Context
from opstream.app.runtime.kinds import Registry, Result, registry

COUNTDOWN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10},
        "intervalMs": {"type": "integer", "minimum": 0, "maximum": 60000, "default": 500},
        "failAt": {"type": "integer", "minimum": 1, "description": "fail at this step"},
    },
    "required": ["steps", "intervalMs"],
    "additionalProperties": False,
}

REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reportType": {"type": "string", "enum": ["yearly-sales"]},
        "year": {"type": "integer", "minimum": 1970, "maximum": 2100},
    },
    "required": ["reportType", "year"],
    "additionalProperties": False,
}

REGIONS = ("north", "south", "east", "west", "central")
PRODUCTS = ("widgets", "gadgets", "gizmos", "doohickeys")
MONTHS = 12
ORDERS_PER_MONTH = 2_000
# The demo is meant to be watched: each month of data takes about this long to "load".
MONTH_PAUSE = 0.35


class DemoFailure(Exception):
    """The failure ``demo.countdown`` was asked to produce."""


async def countdown(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    """Counts steps at a fixed interval: one ProgressUpdated per step; can fail on request."""
    steps = int(params["steps"])
    interval = int(params["intervalMs"]) / 1000
    fail_at = params.get("failAt")
    for step in range(1, steps + 1):
        await asyncio.sleep(interval)
        if fail_at == step:
            raise DemoFailure(f"failed at step {step} of {steps}, as asked by failAt")
        await ctx.progress(100 * step / steps, f"step {step} of {steps}")
    return {"steps": steps}


async def report(ctx: Context, params: dict[str, Any]) -> Result:
    """Builds a yearly sales report as CSV, in stages: load, aggregate, render."""
    year = int(params["year"])
    rng = random.Random(year)
    totals: dict[tuple[int, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    await ctx.stage("loading", f"loading {year} sales")
    for month in range(1, MONTHS + 1):
        await asyncio.sleep(MONTH_PAUSE)
        for _ in range(ORDERS_PER_MONTH):
            key = (month, rng.choice(REGIONS), rng.choice(PRODUCTS))
            totals[key][0] += 1
            totals[key][1] += round(rng.uniform(5, 500), 2)
        await ctx.progress(80 * month / MONTHS, f"{month} of {MONTHS} months loaded")
    await ctx.stage("aggregating", "aggregating by month, region and product")
    await asyncio.sleep(MONTH_PAUSE)
    await ctx.progress(90, f"{len(totals)} groups aggregated")
    await ctx.stage("rendering", "rendering CSV")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["year", "month", "region", "product", "orders", "revenue"])
    for (month, region, product), (orders, revenue) in sorted(totals.items()):
        writer.writerow([year, month, region, product, int(orders), f"{revenue:.2f}"])
    await ctx.progress(100, "report ready")
    return Result(out.getvalue().encode(), "text/csv; charset=utf-8")


DEMO_KINDS = ("demo.countdown", "demo.report")


def register_demo_kinds(target: Registry = registry) -> None:
    target.register(
        "demo.countdown",
        countdown,
        schema=COUNTDOWN_SCHEMA,
        description="Counts `steps` at `intervalMs`; fails at step `failAt` if given.",
    )
    target.register(
        "demo.report",
        report,
        schema=REPORT_SCHEMA,
        description="Builds a yearly sales report (CSV) in stages, with progress and ETA.",
    )
