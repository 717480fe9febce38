"""How the client commands speak: data on stdout (a table for a person on a terminal, JSON lines
for a program through a pipe), one line on stderr for a person, and an exit status.

Every client command writes through these, so a shell script can rely on the statuses and on
stdout carrying nothing but data.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

from opstream.app.client import (
    URL_ENV,
    ClientError,
    InvalidParams,
    Operation,
    ProblemError,
    ServerUnavailable,
    UnknownKind,
)

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed, or a request did (server down, unknown id, bad params)
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_CANCELLED = 3  # the watched operation was cancelled
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
EXIT_BROKEN_PIPE = 141  # the reader went away (``| head``), as a shell reports SIGPIPE

STATUS_STYLES = {
    "queued": "cyan",
    "running": "blue",
    "cancelling": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
}


# -- stdout and stderr -----------------------------------------------------------------------


def is_tty() -> bool:
    return sys.stdout.isatty()


def print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    print(f"opstream: {message}", file=sys.stderr, flush=True)


def fail(message: str, status: int = EXIT_FAILED) -> int:
    """Say what went wrong on one line of stderr; return ``status`` to exit with."""
    line = " ".join(message.split())
    print(f"opstream: error: {line}", file=sys.stderr, flush=True)
    return status


def silence_stdout() -> None:
    # Python flushes stdout at exit; with the reader gone that would raise once more.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def describe_error(exc: ClientError) -> str:
    """One line a person can act on."""
    if isinstance(exc, ServerUnavailable):
        return f"{exc} (is `opstream serve` running there? set --url or {URL_ENV})"
    if isinstance(exc, UnknownKind):
        return exc.detail or f"unknown kind ({exc.title})"
    if isinstance(exc, InvalidParams):
        return f"invalid params: {exc}"
    if isinstance(exc, ProblemError):
        text = exc.detail or exc.title
        return f"{text} (HTTP {exc.status})" if exc.status >= 500 else text
    return str(exc)


# -- operations ------------------------------------------------------------------------------


def operation_json_line(operation: Operation) -> str:
    """The status document on one line, as the server sent it (for jq)."""
    return json.dumps(operation.data, separators=(",", ":"))


def operations_table(operations: list[Operation], now: datetime | None = None) -> Table | Text:
    """The table ``opstream ls`` shows on a terminal."""
    if not operations:
        return Text("no operations", style="dim")
    now = now or datetime.now(UTC)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "KIND", "STATUS", "PROGRESS", "CREATED", "MESSAGE"):
        table.add_column(column, no_wrap=column != "MESSAGE", overflow="ellipsis")
    for op in operations:
        table.add_row(
            op.id,
            op.kind,
            Text(op.status, style=STATUS_STYLES.get(op.status, "")),
            f"{op.progress.percent:3.0f}%",
            _ago(op.created_at, now),
            op.error.message if op.error else op.progress.message,
        )
    return table


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h ago"
    return moment.astimezone().strftime("%Y-%m-%d")
