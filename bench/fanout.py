"""Fan-out: events/s received in total by 1,000 SSE subscribers of one operation's stream, and
of the global feed, against the bare Starlette + sse-starlette broadcast app sending the same
frames. The producer offers more than either can deliver, so the figure is the capacity.
Goal: >= 80 % of the bare app.

Push latency: append -> SSE client receive at 1,000 events/s with 100 subscribers of one
operation, p50 and p99. Goal: p99 < 10 ms. (The bare app's latency is shown for reference.)
"""

from __future__ import annotations

import time

from bench import sse_load
from bench.common import (
    Report,
    bare_server,
    fmt,
    median,
    new_dir,
    opstream_server,
    percentile,
    remote_result,
    spawn,
)

PAD = 64


def _measure(target: str, plan: dict[str, object]) -> dict[str, object]:
    work = new_dir(f"fanout-{target}")
    server = bare_server(work) if target == "bare" else opstream_server(work / "o.db")
    with server:
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        result: dict[str, object] = remote_result(
            spawn(sse_load.fanout, {**plan, "base": server.url, "target": target}), 600
        )
        result["server_cpu"] = server.cpu_seconds() - cpu0
        result["wall"] = time.monotonic() - wall0
    return result


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("fanout")
    repeat = repeat or (1 if quick else 3)
    n = 1000
    seconds, warmup = (4.0, 1.0) if quick else (8.0, 2.0)
    rate = 300.0  # offered events/s: 300,000 frames/s to 1,000 subscribers, above capacity
    count = int(rate * (seconds + warmup + 3))
    plan = {"n": n, "rate": rate, "count": count, "pad": PAD, "seconds": seconds,
            "warmup": warmup}  # fmt: skip
    report.say(
        f"fan-out: {n} subscribers, {rate:g} events/s offered, {seconds:g} s measured after "
        f"{warmup:g} s, {repeat} runs"
    )
    runs: list[dict[str, float]] = []
    for r in range(repeat):
        row: dict[str, float] = {}
        for target in ("bare", "operation", "feed"):
            got = _measure(target, plan)
            row[target] = float(got["events_per_s"])  # type: ignore[arg-type]
            row[f"{target}_cpu"] = float(got["server_cpu"]) / float(got["wall"])  # type: ignore[arg-type]
            if got.get("late"):
                report.say(f"  ({target}: subscribers connected after the producer began)")
        runs.append(row)
        report.say(
            f"  run {r + 1}: bare {fmt(row['bare'], 'ev/s')} | opstream operation stream "
            f"{fmt(row['operation'], 'ev/s')} ({100 * row['operation'] / row['bare']:.0f} %) | "
            f"global feed {fmt(row['feed'], 'ev/s')} ({100 * row['feed'] / row['bare']:.0f} %); "
            f"server CPU bare {row['bare_cpu']:.0%}, operation {row['operation_cpu']:.0%}, "
            f"feed {row['feed_cpu']:.0%} of one core"
        )
    op_ratio = median([x["operation"] / x["bare"] for x in runs])
    feed_ratio = median([x["feed"] / x["bare"] for x in runs])
    report.data.update(runs=runs, operation_ratio=op_ratio, feed_ratio=feed_ratio)
    report.say(
        f"  median: bare {fmt(median([x['bare'] for x in runs]), 'ev/s')}, operation "
        f"{fmt(median([x['operation'] for x in runs]), 'ev/s')}, feed "
        f"{fmt(median([x['feed'] for x in runs]), 'ev/s')}"
    )
    report.verdict("operation stream vs bare", op_ratio, ">= 0.8", op_ratio >= 0.8)
    report.verdict("global feed vs bare", feed_ratio, ">= 0.8", feed_ratio >= 0.8)
    return report


def run_latency(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("latency")
    repeat = repeat or (1 if quick else 3)
    n, rate = 100, 1000.0
    seconds, warmup = (4.0, 1.0) if quick else (10.0, 2.0)
    count = int(rate * (seconds + warmup + 2))
    plan = {"n": n, "rate": rate, "count": count, "pad": PAD, "seconds": seconds,
            "warmup": warmup, "stamps": True}  # fmt: skip
    report.say(
        f"push latency: {n} subscribers of one operation, {rate:g} events/s appended "
        f"(durable, synchronous=FULL), {seconds:g} s measured, {repeat} runs"
    )
    runs: list[dict[str, float]] = []
    for r in range(repeat):
        row: dict[str, float] = {}
        for target in ("bare", "operation"):
            got = _measure(target, plan)
            lat = [x / 1e6 for x in got["latencies_ns"]]  # type: ignore[attr-defined]
            row[f"{target}_p50"] = percentile(lat, 50)
            row[f"{target}_p99"] = percentile(lat, 99)
            row[f"{target}_rate"] = float(got["events_per_s"]) / n  # type: ignore[arg-type]
            row[f"{target}_samples"] = len(lat)
        runs.append(row)
        report.say(
            f"  run {r + 1}: opstream p50 {row['operation_p50']:.2f} ms, p99 "
            f"{row['operation_p99']:.2f} ms ({fmt(row['operation_rate'])} ev/s per subscriber) "
            f"| bare p50 {row['bare_p50']:.2f} ms, p99 {row['bare_p99']:.2f} ms "
            f"({fmt(row['bare_rate'])} ev/s per subscriber)"
        )
    p50 = median([x["operation_p50"] for x in runs])
    p99 = median([x["operation_p99"] for x in runs])
    report.data.update(runs=runs, p50_ms=p50, p99_ms=p99)
    report.say(
        f"  median: opstream p50 {p50:.2f} ms, p99 {p99:.2f} ms; bare p50 "
        f"{median([x['bare_p50'] for x in runs]):.2f} ms, p99 "
        f"{median([x['bare_p99'] for x in runs]):.2f} ms"
    )
    report.verdict("p99 append -> receive (ms)", p99, "< 10", p99 < 10)
    return report
