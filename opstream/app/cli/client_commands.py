"""The client half of the ``opstream`` command line: the subcommands submit, watch, events,
ls, status, cancel and result, with their arguments and help.

``opstream.app.cli.main`` owns the parser and the server commands; it calls
``add_client_commands`` to register these. What each command then does is in ``commands`` and
``watching``; how they print and exit is in ``output``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from opstream.app.cli.commands import (
    cmd_cancel,
    cmd_events,
    cmd_ls,
    cmd_result,
    cmd_status,
    cmd_submit,
)
from opstream.app.cli.watching import cmd_watch
from opstream.app.client import DEFAULT_URL, URL_ENV

__all__ = ["add_client_commands"]

EXIT_STATUS_HELP = """\
exit status: 0 success; 1 the operation failed, or the request did (server down, unknown id,
bad params); 2 bad usage; 3 the operation was cancelled; 130 interrupted (Ctrl-C)."""

Command = Callable[[argparse.Namespace], int]


def add_client_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the client subcommands; each sets ``func(args) -> exit status``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help=f"the opstream server (env {URL_ENV}; default {DEFAULT_URL})",
    )
    formatter = argparse.RawDescriptionHelpFormatter

    def add(
        name: str, help: str, description: str, func: Command, *, takes_id: bool = False
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            name,
            parents=[common],
            help=help,
            description=description,
            epilog=EXIT_STATUS_HELP,
            formatter_class=formatter,
        )
        parser.set_defaults(func=func)
        if takes_id:
            parser.add_argument("id", metavar="ID", help="the operation id")
        return parser

    submit = add(
        "submit",
        "start an operation",
        "Start an operation of KIND. Prints its id (or, on a terminal, a line saying how to\n"
        "follow it); with --watch, follows it like `opstream watch`.\n\n"
        "  opstream submit demo.countdown --param steps=10 --param intervalMs=500 --watch\n"
        '  opstream submit demo.report --params \'{"reportType": "yearly-sales"}\' -p year=2023',
        cmd_submit,
    )
    submit.add_argument("kind", metavar="KIND", help="the operation kind, e.g. demo.countdown")
    submit.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one param; VALUE is read as JSON when it is JSON (5, true, [1,2]), else as a "
        "string; repeatable, and wins over --params",
    )
    submit.add_argument(
        "--params",
        metavar="JSON",
        help="all params as a JSON object, or @FILE to read it from a file ('@-': stdin)",
    )
    submit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="submitting again with the same key and params returns the same operation",
    )
    submit.add_argument(
        "-w", "--watch", action="store_true", help="follow the operation until it ends"
    )
    _add_watch_options(
        submit,
        json_help="print the operation document (with --watch: the "
        "events) as JSON lines even on a terminal",
    )

    watch = add(
        "watch",
        "follow an operation live until it ends",
        "Follow an operation until it ends: on a terminal, a live progress bar (stage,\n"
        "message, ETA) with each event printed as a line; through a pipe, the events as JSON\n"
        "lines. Exits 0 if it succeeds, non-zero if it fails or is cancelled. Survives\n"
        "disconnects and server restarts. Ctrl-C stops watching; the operation keeps\n"
        "running unless --cancel-on-interrupt.",
        cmd_watch,
        takes_id=True,
    )
    _add_watch_options(watch)

    events = add(
        "events",
        "print an operation's events as JSON lines",
        "Print an operation's recorded events, one JSON object per line (ready for jq).\n"
        "With --follow, keep printing live events until the terminal one.",
        cmd_events,
        takes_id=True,
    )
    events.add_argument(
        "--after", type=_non_negative, default=0, metavar="N", help="only events with seq > N"
    )
    events.add_argument(
        "-f", "--follow", action="store_true", help="keep streaming until the operation ends"
    )

    ls = add(
        "ls",
        "list operations",
        "List operations, newest first: a table on a terminal, JSON lines (one operation\n"
        "document per line) through a pipe or with --json.",
        cmd_ls,
    )
    ls.add_argument("--status", metavar="S", help="only this status (queued, running, ...)")
    ls.add_argument("--kind", metavar="K", help="only this kind")
    ls.add_argument(
        "-n", "--limit", type=_positive, default=20, metavar="N", help="at most N (default 20)"
    )
    ls.add_argument("--json", action="store_true", help="JSON lines even on a terminal")

    add(
        "status",
        "print an operation's status document",
        "Print an operation's status document as JSON.",
        cmd_status,
        takes_id=True,
    )

    add(
        "cancel",
        "cancel a queued or running operation",
        "Ask a queued or running operation to stop. An operation that has already ended is\n"
        "left alone (exit 1).",
        cmd_cancel,
        takes_id=True,
    )

    result = add(
        "result",
        "fetch an operation's result",
        "Fetch the result of a succeeded operation, as the bytes the server holds (JSON,\n"
        "CSV, ...), to stdout or to a file.",
        cmd_result,
        takes_id=True,
    )
    result.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of stdout ('-': stdout)"
    )


def _add_watch_options(
    parser: argparse.ArgumentParser,
    json_help: str = "print the events as JSON lines even on a terminal",
) -> None:
    parser.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="on Ctrl-C while watching, cancel the operation instead of leaving it running",
    )
    parser.add_argument("--json", action="store_true", help=json_help)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value
