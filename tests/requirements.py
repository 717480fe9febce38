"""What the suite needs beyond Python packages, and the one rule for when it is not there.

A test that needs PostgreSQL, Chromium, node, curl, ``ss`` or nginx and cannot have it is skipped,
saying what is missing and how to install it. Under CI (``CI`` set to any non-empty value:
``true``, ``1``, ``yes`` all count) it fails instead: CI must prove what the test command
claims, and a skip there exits 0 having proved nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(what: str, how: str) -> NoReturn:
    """``what`` is not available (``how`` says how to get it): skip the test — or, under CI,
    fail it."""
    message = f"{what} is missing: {how}"
    if in_ci():
        pytest.fail(
            f"{message} (CI={os.environ['CI']!r}: failing instead of skipping)", pytrace=False
        )
    pytest.skip(message)


def program(name: str, package: str) -> None:
    """The test runs ``name``: skip without it — or, under CI, fail."""
    if shutil.which(name) is None:
        missing(
            f"the program `{name}`",
            f"not on PATH; install it with `apt-get install -y {package}` "
            "(or run `bash scripts/test-services.sh` as root)",
        )
