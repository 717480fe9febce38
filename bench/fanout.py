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
    spawn,
)

PAD = 64


def _measure(target: str, plan: dict[str, object]) -> dict[str, object]:
    work = new_dir(f"fanout-{target}")
    server = bare_server(work) if target == "bare" else opstream_server(work / "o.db")
    with server:
        remote = spawn(sse_load.fanout, {**plan, "base": server.url, "target": target})
        marks = []
        while True:
            message = remote.recv(600)
            if message == "window":  # the measured window opens, then closes
                marks.append((server.cpu_seconds(), time.monotonic()))
                continue
            result: dict[str, object] = message["result"]
            break
        remote.join()
        (cpu0, wall0), (cpu1, wall1) = marks
        result["server_cpu"], result["wall"] = cpu1 - cpu0, wall1 - wall0
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


def _latency_at(
    report: Report, n: int, rate: float, seconds: float, warmup: float, repeat: int
) -> list[dict[str, float]]:
    count = int(rate * (seconds + warmup + 2))
    plan = {"n": n, "rate": rate, "count": count, "pad": PAD, "seconds": seconds,
            "warmup": warmup, "stamps": True}  # fmt: skip
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
            f"  {rate:g}/s run {r + 1}: opstream p50 {row['operation_p50']:.2f} ms, p99 "
            f"{row['operation_p99']:.2f} ms ({fmt(row['operation_rate'])} ev/s delivered per "
            f"subscriber) | bare p50 {row['bare_p50']:.2f} ms, p99 {row['bare_p99']:.2f} ms "
            f"({fmt(row['bare_rate'])} ev/s per subscriber)"
        )
    return runs


def run_latency(quick: bool = False, repeat: int | None = None) -> Report:
    """The goal is judged at 1,000 events/s; lower rates show where the knee is."""
    report = Report("latency")
    repeat = repeat or (1 if quick else 3)
    n, goal_rate = 100, 1000.0
    rates = [100.0, goal_rate] if quick else [100.0, 300.0, goal_rate]
    seconds, warmup = (4.0, 1.0) if quick else (10.0, 2.0)
    report.say(
        f"push latency: {n} subscribers of one operation, events appended at "
        f"{', '.join(f'{r:g}' for r in rates)} /s (durable, synchronous=FULL) by one handler, "
        f"{seconds:g} s measured, {repeat} runs each"
    )
    by_rate: dict[str, dict[str, float]] = {}
    for rate in rates:
        runs = _latency_at(report, n, rate, seconds, warmup, repeat)
        summary = {
            key: median([x[key] for x in runs])
            for key in ("operation_p50", "operation_p99", "operation_rate", "bare_p50",
                        "bare_p99", "bare_rate")
        }  # fmt: skip
        by_rate[f"{rate:g}"] = summary
        report.say(
            f"  median at {rate:g}/s: opstream p50 {summary['operation_p50']:.2f} ms, p99 "
            f"{summary['operation_p99']:.2f} ms, {fmt(summary['operation_rate'])} ev/s per "
            f"subscriber; bare p50 {summary['bare_p50']:.2f} ms, p99 "
            f"{summary['bare_p99']:.2f} ms, {fmt(summary['bare_rate'])} ev/s per subscriber"
        )
    goal = by_rate[f"{goal_rate:g}"]
    report.data.update(by_rate=by_rate, p50_ms=goal["operation_p50"], p99_ms=goal["operation_p99"])
    met = goal["operation_p99"] < 10 and goal["operation_rate"] >= 0.95 * goal_rate
    report.verdict("p99 append -> receive at 1,000/s (ms)", goal["operation_p99"], "< 10", met)
    if goal["operation_rate"] < 0.95 * goal_rate:
        report.say(
            f"      (and the offered rate was not reached: {fmt(goal['operation_rate'])} of "
            f"{goal_rate:g} events/s)"
        )
    return report
