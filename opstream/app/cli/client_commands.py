"""The client half of the ``opstream`` command line: submit, watch, events, ls, status,
cancel, result.

``opstream.app.cli.main`` owns the parser and the server commands; it calls
``add_client_commands`` to register these. Each command runs the async client under
``asyncio.run``, prints what a person (on a terminal) or a program (through a pipe) wants,
and returns an exit status: errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from opstream.app.client import (
    DEFAULT_URL,
    URL_ENV,
    AlreadyFinished,
    AsyncClient,
    ClientError,
    InvalidParams,
    Operation,
    ProblemError,
    ServerUnavailable,
    UnknownKind,
)
from opstream.app.client.models import event_to_json_line
from opstream.events.fold import estimate_remaining
from opstream.events.model import (
    OPERATION_CANCELLED,
    OPERATION_FAILED,
    OPERATION_SUCCEEDED,
    Event,
)

__all__ = ["add_client_commands"]

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed, or a request did (server down, unknown id, bad params)
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_CANCELLED = 3  # the watched operation was cancelled
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
EXIT_BROKEN_PIPE = 141  # the reader went away (``| head``), as a shell reports SIGPIPE

EXIT_STATUS_HELP = """\
exit status: 0 success; 1 the operation failed, or the request did (server down, unknown id,
bad params); 2 bad usage; 3 the operation was cancelled; 130 interrupted (Ctrl-C)."""

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Arguments that parse but make no sense (``--params`` that is not a JSON object)."""


# -- registration ----------------------------------------------------------------------------


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

    def add(name: str, help: str, description: str, func: Command) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            name,
            parents=[common],
            help=help,
            description=description,
            epilog=EXIT_STATUS_HELP,
            formatter_class=formatter,
        )
        parser.set_defaults(func=func)
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
    )
    watch.add_argument("id", metavar="ID", help="the operation id")
    _add_watch_options(watch)

    events = add(
        "events",
        "print an operation's events as JSON lines",
        "Print an operation's recorded events, one JSON object per line (ready for jq).\n"
        "With --follow, keep printing live events until the terminal one.",
        cmd_events,
    )
    events.add_argument("id", metavar="ID", help="the operation id")
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

    status = add(
        "status",
        "print an operation's status document",
        "Print an operation's status document as JSON.",
        cmd_status,
    )
    status.add_argument("id", metavar="ID", help="the operation id")

    cancel = add(
        "cancel",
        "cancel a queued or running operation",
        "Ask a queued or running operation to stop. An operation that has already ended is\n"
        "left alone (exit 1).",
        cmd_cancel,
    )
    cancel.add_argument("id", metavar="ID", help="the operation id")

    result = add(
        "result",
        "fetch an operation's result",
        "Fetch the result of a succeeded operation, as the bytes the server holds (JSON,\n"
        "CSV, ...), to stdout or to a file.",
        cmd_result,
    )
    result.add_argument("id", metavar="ID", help="the operation id")
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


# -- running a command -----------------------------------------------------------------------


def _client(args: argparse.Namespace) -> AsyncClient:
    return AsyncClient(args.url)


def _run(args: argparse.Namespace, body: Callable[[AsyncClient], Awaitable[int]]) -> int:
    """Run ``body`` with a client; turn every expected failure into a line and a status."""

    async def main() -> int:
        async with _client(args) as client:
            return await body(client)

    try:
        return asyncio.run(main())
    except ClientError as exc:
        return _fail(describe_error(exc))
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


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


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    line = " ".join(message.split())
    print(f"opstream: error: {line}", file=sys.stderr, flush=True)
    return status


def _say(message: str) -> None:
    print(f"opstream: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; with the reader gone that would raise once more.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _is_tty() -> bool:
    return sys.stdout.isatty()


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- submit ----------------------------------------------------------------------------------


def parse_params(params: str | None, pairs: list[str]) -> dict[str, Any]:
    """``--params`` (a JSON object, ``@FILE`` or ``@-``) overlaid with ``--param k=v``."""
    merged: dict[str, Any] = {}
    if params is not None:
        text = params
        if params.startswith("@"):
            source = params[1:]
            try:
                text = sys.stdin.read() if source == "-" else Path(source).read_text("utf-8")
            except OSError as exc:
                raise UsageError(f"--params: cannot read {source}: {exc.strerror}") from exc
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--params is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise UsageError("--params must be a JSON object, like '{\"steps\": 5}'")
        merged.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param expects KEY=VALUE, not {pair!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        merged[key.strip()] = value
    return merged


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        params = parse_params(args.params, args.param)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)

    async def body(client: AsyncClient) -> int:
        operation = await client.submit(args.kind, params, args.idempotency_key)
        args.id = operation.id
        if args.watch:
            if _is_tty() and not args.json:
                _say(f"submitted {operation.id} ({operation.kind})")
        elif args.json:
            _print_line(json.dumps(operation.data, separators=(",", ":")))
        elif _is_tty():
            _print_line(f"{operation.id}  {operation.status}  {operation.kind}")
            _say(f"follow it with: opstream watch {operation.id}")
        else:
            _print_line(operation.id)
        return EXIT_OK

    status = _run(args, body)
    if status != EXIT_OK or not args.watch:
        return status
    return cmd_watch(args)


# -- watch -----------------------------------------------------------------------------------


@dataclass
class WatchState:
    """What the progress bar shows, folded leniently from the events seen so far (a watch
    may start in the middle of a history, where the strict fold would refuse)."""

    status: str = "queued"
    percent: float = 0.0
    stage: str = ""
    message: str = ""
    eta: float | None = None
    eta_at: float = 0.0
    started_ms: int | None = None
    finished_ms: int | None = None
    error: str = ""

    def apply(self, event: Event, now: float | None = None) -> None:
        details = event.details
        self.message = event.message or self.message
        if event.is_terminal:
            self.finished_ms = event.happened_at
        if event.type == "OperationStarted":
            self.status, self.started_ms = "running", event.happened_at
        elif event.type == "OperationRetried":
            self.status, self.eta = "queued", None
        elif event.type == "CancellationRequested":
            self.status = "cancelling"
        elif event.type == "StageStarted":
            self.stage = str(details.get("stage") or self.stage)
        elif event.type == "ProgressUpdated":
            if isinstance(details.get("percent"), int | float):
                self.percent = min(100.0, max(0.0, float(details["percent"])))
            self.stage = str(details.get("stage") or self.stage)
            eta = details.get("estimatedTimeRemaining")
            if not isinstance(eta, int | float):
                eta = estimate_remaining(self.started_ms, event.happened_at, self.percent)
            self.eta = None if eta is None else float(eta)
            self.eta_at = time.monotonic() if now is None else now
        elif event.type == OPERATION_SUCCEEDED:
            self.status, self.percent, self.eta = "succeeded", 100.0, None
        elif event.type == OPERATION_FAILED:
            error = details.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.status, self.eta = "failed", None
            self.error = str(message or event.message or "the operation failed")
        elif event.type == OPERATION_CANCELLED:
            self.status, self.eta = "cancelled", None

    def took(self) -> float | None:
        """Seconds from start to end, once the operation has ended."""
        if self.started_ms is None or self.finished_ms is None:
            return None
        return max(0, self.finished_ms - self.started_ms) / 1000

    def remaining(self, now: float | None = None) -> float | None:
        """The ETA, counting down since it was reported."""
        if self.eta is None:
            return None
        elapsed = (time.monotonic() if now is None else now) - self.eta_at
        return max(0.0, self.eta - elapsed)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


STATUS_STYLES = {
    "queued": "cyan",
    "running": "blue",
    "cancelling": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
}

EVENT_STYLES = {
    OPERATION_SUCCEEDED: "bold green",
    OPERATION_FAILED: "bold red",
    OPERATION_CANCELLED: "bold yellow",
    "CancellationRequested": "yellow",
    "OperationRetried": "magenta",
}


class WatchView(Protocol):
    def show(self, event: Event) -> None: ...

    def note(self, message: str) -> None: ...


class JsonLinesView:
    """Events as JSON lines on stdout; nothing else goes there."""

    def show(self, event: Event) -> None:
        _print_line(event_to_json_line(event))

    def note(self, message: str) -> None:
        pass


class _EtaColumn(ProgressColumn):
    def __init__(self, state: WatchState) -> None:
        super().__init__()
        self.state = state

    def render(self, task: Task) -> Text:
        took = self.state.took()
        if took is not None:
            return Text(f"took {format_duration(took)}", style="progress.elapsed")
        remaining = self.state.remaining()
        if remaining is None:
            return Text("ETA -:--:--", style="dim")
        return Text(f"ETA {format_duration(remaining)}", style="progress.remaining")


class LiveView:
    """A rich progress bar (status, stage, percent, ETA, message) pinned below the event
    lines, which scroll above it as they arrive."""

    def __init__(self, operation: Operation, console: Console | None = None) -> None:
        self.operation = operation
        self.state = WatchState(status=operation.status, percent=operation.progress.percent)
        self.console = console or Console(highlight=False)
        self.progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.fields[status]}"),
            TextColumn("[bold]{task.fields[stage]}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            _EtaColumn(self.state),
            TextColumn("{task.fields[message]}"),
            console=self.console,
            refresh_per_second=8,
        )
        self.task = self.progress.add_task(operation.id, total=100.0, **self._fields())
        self._last_note = ""

    def __enter__(self) -> LiveView:
        self.console.print(
            Text.assemble(
                ("watching ", "dim"),
                (self.operation.id, "bold"),
                ("  ", ""),
                (self.operation.kind, "cyan"),
            )
        )
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _fields(self) -> dict[str, Any]:
        style = STATUS_STYLES.get(self.state.status, "")
        return {
            "status": f"[{style}]{self.state.status:<10}[/]" if style else self.state.status,
            "stage": escape(self.state.stage),
            "message": escape(self.state.message),
        }

    def show(self, event: Event) -> None:
        self._last_note = ""
        self.state.apply(event)
        moment = datetime.fromtimestamp(event.happened_at / 1000, tz=UTC).astimezone()
        self.progress.console.print(
            Text.assemble(
                (f"{event.seq:>4} ", "dim"),
                (moment.strftime("%H:%M:%S.") + f"{event.happened_at % 1000:03d} ", "dim"),
                (f"{event.type:<22}", EVENT_STYLES.get(event.type, "bold")),
                (" " + event.message, ""),
            )
        )
        finished = self.state.status in ("succeeded", "failed", "cancelled")
        self.progress.update(self.task, completed=self.state.percent, **self._fields())
        if finished:
            self.progress.stop_task(self.task)

    def note(self, message: str) -> None:
        """A reconnection notice: printed once per reason, and the bar says so meanwhile."""
        text = message.removeprefix(f"operation {self.operation.id}: ")
        reason = text.rsplit(" in ", 1)[0]
        if reason != self._last_note:
            self._last_note = reason
            self.progress.console.print(Text(text, style="dim italic"))
        self.progress.update(self.task, status="[yellow]reconnecting[/]")


class _NoteHandler(logging.Handler):
    """Shows the client's reconnection notices in the view instead of going silent."""

    def __init__(self, view: WatchView) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.view.note(record.getMessage())


@contextlib.contextmanager
def _reconnect_notes(view: WatchView) -> Iterator[None]:
    logger = logging.getLogger("opstream.client")
    handler = _NoteHandler(view)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def cmd_watch(args: argparse.Namespace) -> int:
    outcome: dict[str, str] = {}

    async def body(client: AsyncClient) -> int:
        operation = await client.get(args.id)
        live = _is_tty() and not args.json
        view: WatchView
        with contextlib.ExitStack() as stack:
            view = stack.enter_context(LiveView(operation)) if live else JsonLinesView()
            stack.enter_context(_reconnect_notes(view))
            async with contextlib.aclosing(client.watch(operation.id)) as events:
                async for event in events:
                    view.show(event)
                    if event.is_terminal:
                        outcome["type"] = event.type
                        outcome["message"] = _failure_message(event)
        return _watch_status(operation.id, outcome)

    status = _run(args, body)
    if status != EXIT_INTERRUPTED:
        return status
    if not args.cancel_on_interrupt:
        _say(
            f"stopped watching {args.id}; it keeps running "
            f"(cancel it with: opstream cancel {args.id})"
        )
        return EXIT_INTERRUPTED

    async def cancel(client: AsyncClient) -> int:
        try:
            operation = await client.cancel(args.id)
        except AlreadyFinished as exc:
            _say(f"stopped watching {args.id}; it had already {exc.operation.status}")
            return EXIT_INTERRUPTED
        _say(f"stopped watching {args.id}; cancellation requested ({operation.status})")
        return EXIT_INTERRUPTED

    _say(f"interrupted: cancelling {args.id}")
    cancelled = _run(args, cancel)
    return EXIT_INTERRUPTED if cancelled in (EXIT_OK, EXIT_INTERRUPTED) else cancelled


def _failure_message(event: Event) -> str:
    error = event.details.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return event.message


def _watch_status(operation_id: str, outcome: dict[str, str]) -> int:
    kind = outcome.get("type")
    if kind == OPERATION_SUCCEEDED:
        return EXIT_OK
    if kind == OPERATION_FAILED:
        return _fail(f"operation {operation_id} failed: {outcome.get('message') or 'no reason'}")
    if kind == OPERATION_CANCELLED:
        return _fail(f"operation {operation_id} was cancelled", EXIT_CANCELLED)
    return _fail(f"operation {operation_id}: the event stream ended without an outcome")


# -- events, ls, status, cancel, result ------------------------------------------------------


def cmd_events(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        if not args.follow:
            await client.get(args.id)  # an unknown id is an error, not an empty history
        events = (
            client.watch(args.id, after=args.after)
            if args.follow
            else client.events(args.id, after=args.after)
        )
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                _print_line(event_to_json_line(event))
        return EXIT_OK

    return _run(args, body)


def cmd_ls(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        operations = await client.list(status=args.status, kind=args.kind, limit=args.limit)
        if args.json or not _is_tty():
            for operation in operations:
                _print_line(json.dumps(operation.data, separators=(",", ":")))
        else:
            Console(highlight=False).print(operations_table(operations))
        return EXIT_OK

    return _run(args, body)


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


def cmd_status(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        operation = await client.get(args.id)
        indent = 2 if _is_tty() else None
        _print_line(json.dumps(operation.data, indent=indent, ensure_ascii=False))
        return EXIT_OK

    return _run(args, body)


def cmd_cancel(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        try:
            operation = await client.cancel(args.id)
        except AlreadyFinished as exc:
            return _fail(f"operation {args.id} already {exc.operation.status}; nothing to cancel")
        if operation.status == "cancelled":
            _say(f"{operation.id} cancelled")
        else:
            _say(f"{operation.id}: cancellation requested ({operation.status})")
        return EXIT_OK

    return _run(args, body)


def cmd_result(args: argparse.Namespace) -> int:
    async def body(client: AsyncClient) -> int:
        result = await client.result(args.id)
        if args.output and args.output != "-":
            path = Path(args.output)
            try:
                await asyncio.to_thread(path.write_bytes, result.content)
            except OSError as exc:
                return _fail(f"cannot write {path}: {exc.strerror}")
            _say(f"wrote {len(result.content)} bytes ({result.content_type}) to {path}")
            return EXIT_OK
        if _is_tty() and not _is_textual(result.content_type):
            return _fail(
                f"the result is {result.content_type} ({len(result.content)} bytes); "
                "use -o FILE to save it"
            )
        sys.stdout.buffer.write(result.content)
        if _is_tty() and not result.content.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
        return EXIT_OK

    return _run(args, body)


def _is_textual(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return (
        media.startswith("text/")
        or media in ("application/json", "application/xml", "application/x-ndjson")
        or media.endswith(("+json", "+xml"))
    )
