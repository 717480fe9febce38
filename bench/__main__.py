"""``python -m bench SCENARIO [--quick] [--repeat N]``, or ``python -m bench all --quick``."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench.common import machine, raise_fd_limit

SCENARIOS = {
    "appends": ("bench.appends", "run"),
    "fanout": ("bench.fanout", "run"),
    "latency": ("bench.fanout", "run_latency"),
    "idle": ("bench.idle", "run"),
    "polling": ("bench.polling", "run"),
    "replay": ("bench.replay", "run"),
    "growth": ("bench.growth", "run"),
    "soak": ("bench.soak", "run"),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repeats")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure")
    parser.add_argument("--seconds", type=float, default=None, help="soak: how long")
    args = parser.parse_args()
    raise_fd_limit()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(f"# {machine()}", flush=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: python -m bench {' '.join(sys.argv[1:])}")
    failed = []
    for name in names:
        module, func = SCENARIOS[name]
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


if __name__ == "__main__":
    sys.exit(main())
