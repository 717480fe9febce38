"""``python -m bench SCENARIO [--quick] [--repeat N]``, or ``python -m bench all --quick``."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine, raise_fd_limit

PG_ENV = "OPSTREAM_TEST_POSTGRES_URL"
SCENARIOS = {
    "appends": ("bench.appends", "run"),
    "fanout": ("bench.fanout", "run"),
    "latency": ("bench.fanout", "run_latency"),
    "idle": ("bench.idle", "run"),
    "polling": ("bench.polling", "run"),
    "access-log": ("bench.access_log", "run"),
    "replay": ("bench.replay", "run"),
    "growth": ("bench.growth", "run"),
    "soak": ("bench.soak", "run"),
    "cache": ("bench.cache", "run"),
    "http-workers": ("bench.http_workers", "run"),
    # PostgreSQL: need OPSTREAM_TEST_POSTGRES_URL (``all`` skips them without it).
    "pg-appends": ("bench.pg", "run_appends"),
    "pg-fanout": ("bench.pg", "run_fanout"),
    "pg-latency": ("bench.pg", "run_latency"),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenario",
        choices=[*SCENARIOS, "all"],
        help=f"pg-* run on PostgreSQL and need {PG_ENV} ('all' skips them without it)",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repeats")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure")
    parser.add_argument("--seconds", type=float, default=None, help="soak: how long")
    parser.add_argument(
        "--at",
        metavar="REV",
        help="measure opstream as committed at REV (e.g. HEAD), not the working tree: "
        "its opstream/ is exported beside a copy of bench/ and run from there",
    )
    args = parser.parse_args()
    if args.at:
        return _rerun_at(args.at)
    raise_fd_limit()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(f"# {machine()}", flush=True)
    print(f"# opstream: {os.environ.get('OPSTREAM_BENCH_SOURCE') or _source()}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: python -m bench {' '.join(sys.argv[1:])}")
    failed = []
    for name in names:
        module, func = SCENARIOS[name]
        if name.startswith("pg-") and args.scenario == "all" and not os.environ.get(PG_ENV):
            print(f"{name}: skipped: {PG_ENV} is not set (see bench/pg.py)\n", flush=True)
            continue
        if name == "cache" and args.scenario == "all" and not shutil.which("nginx"):
            print(f"{name}: skipped: nginx is not installed (apt-get install -y nginx)\n")
            continue
        run = getattr(importlib.import_module(module), func)
        extra = {"seconds": args.seconds} if name == "soak" else {}
        started = time.monotonic()
        try:
            report = run(quick=args.quick, repeat=args.repeat, **extra)
        except Exception as exc:  # one broken scenario must not hide the others
            print(f"{name}: FAILED: {exc!r}", flush=True)
            failed.append(name)
            continue
        path = report.save()
        print(f"  ({name}: {time.monotonic() - started:.0f} s; figures in {path})\n", flush=True)
    return 1 if failed else 0


def _git(*argv: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True
    ).stdout.strip()


def _source() -> str:
    """Which code is measured: the commit, and whether the tree differs from it."""
    try:
        sha = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "opstream")
    except (OSError, subprocess.CalledProcessError):
        return f"{REPO} (not a git checkout)"
    return f"working tree at {sha}" + (" with uncommitted changes in opstream/" if dirty else "")


def _rerun_at(rev: str) -> int:
    """Export ``opstream/`` at ``rev`` and this ``bench/`` to a directory; run from there."""
    sha = _git("rev-parse", "--short", rev)
    dest = Path(tempfile.mkdtemp(prefix=f"opstream-bench-at-{sha}-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", sha, "opstream"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shutil.copytree(REPO / "bench", dest / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "deploy", dest / "deploy")  # the nginx configuration (bench.cache)
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--at" and sys.argv[i] != "--at"]
    argv = [a for a in argv if not a.startswith("--at=")]
    env = {**os.environ, "OPSTREAM_BENCH_SOURCE": f"commit {sha} (--at {rev})"}
    return subprocess.run([sys.executable, "-m", "bench", *argv], cwd=dest, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
