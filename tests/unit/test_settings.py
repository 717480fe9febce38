"""Settings: unusable values are refused at start, naming the variable or flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opstream.app.runtime.settings import Settings


def test_the_defaults_are_valid() -> None:
    assert Settings().heartbeat_seconds == 15.0


def test_a_variable_that_is_not_a_number_is_named() -> None:
    with pytest.raises(ValueError, match=r"OPSTREAM_LEASE_SECONDS: not a float: 'soon'"):
        Settings.from_env({"OPSTREAM_LEASE_SECONDS": "soon"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("heartbeat_seconds", 0),  # sse-starlette would stop sending keep-alives
        ("heartbeat_seconds", -1),  # and refuse every stream
        ("heartbeat_seconds", float("nan")),  # no keep-alive, so no stalled client caught
        ("heartbeat_seconds", float("inf")),
        ("lease_seconds", 0),
        ("concurrency", -1),
        ("max_attempts", 0),
        ("create_rate", 0),
        ("port", 70000),
        ("sqlite_synchronous", "OFF; DROP TABLE events"),
        ("log_level", "loud"),
    ],
)
def test_unusable_values_are_refused(name: str, value: object) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ValueError, match=flag):
        Settings.from_env({}, **{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [("concurrency", 0), ("result_ttl_seconds", 0), ("sqlite_synchronous", "normal")],
)
def test_edge_values_that_mean_something_are_kept(name: str, value: object) -> None:
    assert getattr(Settings.from_env({}, **{name: value}), name) == value


def test_the_command_exits_2_with_one_line_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opstream.app.cli.main", "serve", "--heartbeat-seconds", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "opstream: error: --heartbeat-seconds (OPSTREAM_HEARTBEAT_SECONDS) must be above 0, not -1"
    )


@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("sqlite:////proc/opstream-none/x.db", "SQLite: cannot create /proc/opstream-none"),
        ("postgresql://someone:secret@127.0.0.1:1/none", "PostgreSQL: "),
    ],
)
def test_a_database_that_cannot_be_opened_is_one_line_not_a_traceback(
    command: str, database: str, reason: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opstream.app.cli.main", command, "--database", database],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("opstream: ") and reason in last, done.stderr
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
