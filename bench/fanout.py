"""Fan-out: events/s received in total by 1,000 SSE subscribers of one operation's stream, and
of the global feed, against the bare Starlette + sse-starlette broadcast app sending the same
frames. The producer offers 300 events/s (300,000 frames/s), more than the bare app can send
one frame per send; a target that delivers all of it (opstream batches what arrived since a
subscriber's last write into one send) is flagged, as its figure is then a floor, not its
capacity. Goal: >= 80 % of the bare app.

Push latency: append -> SSE client receive at 1,000 events/s with 100 subscribers of one
operation, p50 and p99. Goal: p99 < 10 ms. (The bare app's latency is shown for reference.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from bench import sse_load
from bench.common import (
    Remote,
    Report,
    Server,
    bare_server,
    fmt,
    head,
    median,
    new_dir,
    opstream_server,
    percentile,
    remote_result,
    spawn,
    stall_probe,
)

PAD = 64

Setup = Callable[[Path], AbstractContextManager[tuple[Server, Server]]]
"""Starts opstream for one run in a work directory: the server whose handler appends (the
producer), and the server the subscribers read; the same server unless the storage is shared."""


@contextlib.contextmanager
def sqlite_setup(work: Path) -> Iterator[tuple[Server, Server]]:
    with opstream_server(work / "o.db") as server:
        yield server, server


def measure(
    target: str, plan: Mapping[str, object], setup: Setup = sqlite_setup
) -> dict[str, object]:
    """Run the load against fresh servers: its result, and over the measured window the
    subscribed server's CPU, the producer's CPU and, for opstream, how many events it appended."""
    work = new_dir(f"fanout-{target}")
    with contextlib.ExitStack() as stack:
        if target == "bare":
            producer = server = stack.enter_context(bare_server(work))
        else:
            producer, server = stack.enter_context(setup(work))
        load = {**plan, "base": server.url, "producer": producer.url, "target": target}
        probe = spawn(stall_probe)
        stack.callback(probe.process.kill)  # if the run failed before telling it to stop
        remote = spawn(sse_load.fanout, load)
        marks = []
        while True:
            message = remote.recv(600)
            if message == "window":  # the measured window opens, then closes
                marks.append(_sample(target, producer, server, remote))
                continue
            result: dict[str, object] = message["result"]
            break
        remote.join()
        probe.send("stop")
        stalls = remote_result(probe)
    first, last = marks
    wall = last.wall - first.wall
    opened, closed = result["window"]  # type: ignore[misc]
    late = [seconds for at, seconds in stalls if at + seconds >= opened and at <= closed]
    result.update(
        wall=wall,
        server_cpu=last.server_cpu - first.server_cpu,
        producer_cpu=last.producer_cpu - first.producer_cpu,
        load_cpu=last.load_cpu - first.load_cpu,
        appended_per_s=(last.head - first.head) / wall,
        machine_stalls=len(late),
        machine_stall_max=max(late, default=0.0),
    )
    return result


class _Mark(NamedTuple):
    """Where things stand as the measured window opens or closes: CPU seconds so far."""

    server_cpu: float
    producer_cpu: float
    load_cpu: float
    head: int  # the producer's, for opstream; 0 for the bare app
    wall: float


def _sample(target: str, producer: Server, server: Server, load: Remote) -> _Mark:
    position = 0 if target == "bare" else head(producer.url)
    times = psutil.Process(load.process.pid).cpu_times()
    load_cpu = times.user + times.system
    return _Mark(server.cpu_seconds(), producer.cpu_seconds(), load_cpu, position, time.monotonic())


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
            got = measure(target, plan)
            row[target] = float(got["events_per_s"])  # type: ignore[arg-type]
            row[f"{target}_cpu"] = float(got["server_cpu"]) / float(got["wall"])  # type: ignore[arg-type]
            if got.get("late"):
                report.say(f"  ({target}: subscribers connected after the producer began)")
            if row[target] >= 0.95 * n * rate:
                report.say(f"  ({target}: delivered all that was offered; capacity is higher)")
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
    report: Report,
    setups: dict[str, Setup],
    plan: dict[str, Any],
    repeat: int,
) -> list[dict[str, float]]:
    """``repeat`` runs of the bare app and of each labelled opstream setup, one row each."""
    n, rate = plan["n"], plan["rate"]
    targets: list[tuple[str, Setup | None]] = [("bare", None), *setups.items()]
    runs: list[dict[str, float]] = []
    for r in range(repeat):
        row: dict[str, float] = {}
        for label, setup in targets:
            got = measure("bare", plan) if setup is None else measure("operation", plan, setup)
            lat = [x / 1e6 for x in got["latencies_ns"]]  # type: ignore[attr-defined]
            row[f"{label}_p50"] = percentile(lat, 50)
            row[f"{label}_p99"] = percentile(lat, 99)
            row[f"{label}_rate"] = float(got["events_per_s"]) / n  # type: ignore[arg-type]
            row[f"{label}_samples"] = len(lat)
            row[f"{label}_stalls"] = float(got["machine_stalls"])  # type: ignore[arg-type]
            row[f"{label}_stall_max"] = float(got["machine_stall_max"])  # type: ignore[arg-type]
        runs.append(row)
        report.say(f"  {rate:g}/s run {r + 1}: {_latencies(row, [*setups, 'bare'])}")
    return runs


def _latencies(row: dict[str, float], labels: list[str]) -> str:
    return " | ".join(
        f"{label} p50 {row[f'{label}_p50']:.2f} ms, p99 {row[f'{label}_p99']:.2f} ms "
        f"({fmt(row[f'{label}_rate'])} ev/s delivered per subscriber{_stalls(row, label)})"
        for label in labels
    )


def _stalls(row: dict[str, float], label: str) -> str:
    """The machine's stalls in the window, which every process there waited out (see
    ``stall_probe``): a p99 beside them measures the host as much as what ran on it."""
    count = row.get(f"{label}_stalls", 0)
    if not count:
        return ""
    longest = 1000 * row[f"{label}_stall_max"]
    return f"; the machine stalled {count:g} times, longest {longest:.0f} ms"


def run_latency(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("latency")
    what = "durable, synchronous=FULL"
    return latency_report(report, {"opstream": sqlite_setup}, what, quick, repeat)


def latency_report(
    report: Report, setups: dict[str, Setup], what: str, quick: bool, repeat: int | None
) -> Report:
    """Push latency of each setup beside the bare app's, at several offered rates.

    The goal is judged at 1,000 events/s; lower rates show where the knee is."""
    repeat = repeat or (1 if quick else 3)
    n, goal_rate = 100, 1000.0
    rates = [100.0, goal_rate] if quick else [100.0, 300.0, goal_rate]
    seconds, warmup = (4.0, 1.0) if quick else (10.0, 2.0)
    report.say(
        f"push latency: {n} subscribers of one operation, events appended at "
        f"{', '.join(f'{r:g}' for r in rates)} /s ({what}) by one handler, "
        f"{seconds:g} s measured, {repeat} runs each"
    )
    labels = [*setups, "bare"]
    by_rate: dict[str, dict[str, float]] = {}
    for rate in rates:
        count = int(rate * (seconds + warmup + 2))
        plan = {"n": n, "rate": rate, "count": count, "pad": PAD, "seconds": seconds,
                "warmup": warmup, "stamps": True}  # fmt: skip
        runs = _latency_at(report, setups, plan, repeat)
        summary = {key: median([x[key] for x in runs]) for key in runs[0]}
        by_rate[f"{rate:g}"] = summary
        report.say(f"  median at {rate:g}/s: {_latencies(summary, labels)}")
    goal = by_rate[f"{goal_rate:g}"]
    first = next(iter(setups))
    report.data.update(by_rate=by_rate, p50_ms=goal[f"{first}_p50"], p99_ms=goal[f"{first}_p99"])
    for label in setups:
        p99, reached = goal[f"{label}_p99"], goal[f"{label}_rate"]
        met = p99 < 10 and reached >= 0.95 * goal_rate
        name = "p99 append -> receive at 1,000/s (ms)" + (f", {label}" if len(setups) > 1 else "")
        report.verdict(name, p99, "< 10", met)
        if reached < 0.95 * goal_rate:
            report.say(
                f"      (and the offered rate was not reached: {fmt(reached)} of "
                f"{goal_rate:g} events/s)"
            )
    return report
