"""Every module in bench/ imports with the dev install alone, so ``make bench`` cannot rot.

It did: ``bench/common.py`` imported psutil, which only bench/requirements.txt named, and a
fresh clone's ``make bench`` failed. The modules are found with pkgutil, not listed, so a new
scenario is covered the day it is added. Each is imported in a fresh interpreter: some import
for their side effects (``bench.handlers`` registers a kind in opstream's global registry),
which must not leak into the other tests.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
MODULES = sorted(f"bench.{module.name}" for module in pkgutil.iter_modules([str(BENCH)]))


def test_the_benchmarks_are_found() -> None:
    # An empty list would make the test below vanish rather than fail.
    assert {"bench.__main__", "bench.common", "bench.fanout"} <= set(MODULES), MODULES


@pytest.mark.parametrize("module", MODULES)
def test_bench_module_imports(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"`import {module}` failed:\n{done.stderr}"
