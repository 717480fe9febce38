"""HTTP workers: events/s reported through ``opstream worker --url`` against the same
handlers run in-process, and claim latency at an idle worker (both kinds), same run.

Throughput: ``OPS`` operations of ``bench.ticker`` (as fast as it can emit) at once, on a
server with in-process workers (the baseline), then on a server with none and one
``opstream worker --url --concurrency OPS`` process beside it. Events/s is every event the
operations appended over the span from the first ``startedAt`` to the last ``finishedAt``
(the server's own times). The handler context batches: each report request carries
everything emitted while the previous one was in flight.

Claim latency: one operation at a time on an idle system (the worker waits in its claim),
``happenedAt`` of ``OperationStarted`` minus that of ``OperationQueued`` (both stamped by
the server, ms), so that the client's own timing does not count.
"""

from __future__ import annotations

import calendar
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    REPO,
    Report,
    Server,
    create_operation,
    fmt,
    median,
    new_dir,
    opstream_server,
    percentile,
)

RATE = 1e9  # as fast as the handler can emit


def _ms(text: str) -> int:
    """RFC 3339 with milliseconds (``2026-11-23T10:05:26.222Z``) as epoch ms."""
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + int(text[20:23])


def _worker(url: str, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "opstream.app.cli.main", "worker", "--url", url,
        "--handlers", "bench.handlers", "--concurrency", str(concurrency),
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _finished(base: str, operation_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=70) as client:
        while time.monotonic() < deadline:
            document: dict[str, Any] = client.get(f"/operations/{operation_id}?wait=30").json()
            if document["status"] in ("succeeded", "failed", "cancelled"):
                return document
    raise RuntimeError(f"{operation_id} did not finish in {timeout} s")


def _throughput(server: Server, ops: int, count: int) -> float:
    ids = [
        create_operation(server.url, "bench.ticker", {"count": count, "rate": RATE})["id"]
        for _ in range(ops)
    ]
    documents = [_finished(server.url, operation_id) for operation_id in ids]
    if any(d["status"] != "succeeded" for d in documents):
        raise RuntimeError(f"not all succeeded: {[d['status'] for d in documents]}")
    events = sum(d["lastEventSeq"] - 2 for d in documents)  # less queued and started
    span = max(_ms(d["finishedAt"]) for d in documents) - min(
        _ms(d["startedAt"]) for d in documents
    )
    return events / (span / 1000)


def _claim_latency(server: Server, samples: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(samples):
            time.sleep(0.2)  # the worker is idle again, waiting in its claim
            operation_id = create_operation(server.url, "bench.hold", {"seconds": 0})["id"]
            _finished(server.url, operation_id)
            events = client.get(f"/operations/{operation_id}/events?limit=2").json()
            queued, started = events[0]["happenedAt"], events[1]["happenedAt"]
            latencies.append(float(_ms(started) - _ms(queued)))
    return latencies


def run(quick: bool = False, repeat: int | None = None) -> Report:
    report = Report("http-workers")
    repeat = repeat or (1 if quick else 3)
    ops, count = (4, 1000) if quick else (8, 2000)
    samples = 20 if quick else 100
    report.say(
        f"HTTP workers: {ops} operations x {count} events, as fast as the handler emits; "
        f"claim latency over {samples} operations at an idle worker; {repeat} runs"
    )
    runs: list[dict[str, Any]] = []
    for r in range(repeat):
        row: dict[str, Any] = {}
        work = new_dir("http-workers-inproc")
        with opstream_server(work / "o.db", concurrency=ops) as server:
            row["inproc_eps"] = _throughput(server, ops, count)
            row["inproc_claim"] = _claim_latency(server, samples)
        work = new_dir("http-workers-remote")
        with opstream_server(work / "o.db", concurrency=0) as server:
            worker = _worker(server.url, ops, work / "worker.log")
            try:
                time.sleep(1.5)  # the worker is up and waiting in its claims
                row["http_eps"] = _throughput(server, ops, count)
                row["http_claim"] = _claim_latency(server, samples)
            finally:
                _stop(worker)
        runs.append(row)
        report.say(
            f"  run {r + 1}: in-process {fmt(row['inproc_eps'], 'ev/s')}, "
            f"HTTP {fmt(row['http_eps'], 'ev/s')} "
            f"(ratio {row['http_eps'] / row['inproc_eps']:.2f}); claim p50/p99 ms: "
            f"in-process {percentile(row['inproc_claim'], 50):g}/"
            f"{percentile(row['inproc_claim'], 99):g}, "
            f"HTTP {percentile(row['http_claim'], 50):g}/{percentile(row['http_claim'], 99):g}"
        )
    ratio = median([x["http_eps"] / x["inproc_eps"] for x in runs])
    claims = {kind: [v for x in runs for v in x[f"{kind}_claim"]] for kind in ("inproc", "http")}
    summary = {
        "inproc_eps": median([x["inproc_eps"] for x in runs]),
        "http_eps": median([x["http_eps"] for x in runs]),
        "ratio": ratio,
        **{f"{k}_claim_p50_ms": percentile(v, 50) for k, v in claims.items()},
        **{f"{k}_claim_p99_ms": percentile(v, 99) for k, v in claims.items()},
    }
    report.data.update(runs=runs, **summary)
    report.say(
        f"  median: in-process {fmt(summary['inproc_eps'], 'ev/s')}, "
        f"HTTP {fmt(summary['http_eps'], 'ev/s')}, ratio {ratio:.2f}; claim p50/p99 ms "
        f"in-process {summary['inproc_claim_p50_ms']:g}/{summary['inproc_claim_p99_ms']:g}, "
        f"HTTP {summary['http_claim_p50_ms']:g}/{summary['http_claim_p99_ms']:g}"
    )
    return report
