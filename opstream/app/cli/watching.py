"""``opstream watch``: follow an operation until it ends, and exit with how it ended.

The client's ``watch`` already survives disconnects and restarts; this adds what a person
needs around it: a view (the live bar on a terminal, JSON lines through a pipe), the client's
reconnection notices shown in that view, and what Ctrl-C does (stop watching, or cancel).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

from opstream.app.cli.live_view import LiveView
from opstream.app.cli.output import (
    EXIT_CANCELLED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    fail,
    is_tty,
    print_line,
    say,
)
from opstream.app.cli.running import run_with_client
from opstream.app.client import AlreadyFinished, AsyncClient
from opstream.app.client.models import event_to_json_line
from opstream.events.model import (
    OPERATION_CANCELLED,
    OPERATION_FAILED,
    OPERATION_SUCCEEDED,
    Event,
)


class WatchView(Protocol):
    def show(self, event: Event) -> None: ...

    def note(self, message: str) -> None: ...


class JsonLinesView:
    """Events as JSON lines on stdout; nothing else goes there."""

    def show(self, event: Event) -> None:
        print_line(event_to_json_line(event))

    def note(self, message: str) -> None:
        pass


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
    """Exit 0 if the operation succeeds, 1 if it fails, 3 if it is cancelled, 130 on Ctrl-C."""
    outcome: dict[str, str] = {}

    async def body(client: AsyncClient) -> int:
        operation = await client.get(args.id)
        live = is_tty() and not args.json
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

    status = run_with_client(args, body)
    if status != EXIT_INTERRUPTED:
        return status
    return _stop_watching(args)


def _stop_watching(args: argparse.Namespace) -> int:
    """After Ctrl-C: leave the operation running and say how to cancel it, or (with
    ``--cancel-on-interrupt``) cancel it."""
    if not args.cancel_on_interrupt:
        say(
            f"stopped watching {args.id}; it keeps running "
            f"(cancel it with: opstream cancel {args.id})"
        )
        return EXIT_INTERRUPTED

    async def cancel(client: AsyncClient) -> int:
        try:
            operation = await client.cancel(args.id)
        except AlreadyFinished as exc:
            say(f"stopped watching {args.id}; it had already {exc.operation.status}")
            return EXIT_INTERRUPTED
        say(f"stopped watching {args.id}; cancellation requested ({operation.status})")
        return EXIT_INTERRUPTED

    say(f"interrupted: cancelling {args.id}")
    cancelled = run_with_client(args, cancel)
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
        return fail(f"operation {operation_id} failed: {outcome.get('message') or 'no reason'}")
    if kind == OPERATION_CANCELLED:
        return fail(f"operation {operation_id} was cancelled", EXIT_CANCELLED)
    return fail(f"operation {operation_id}: the event stream ended without an outcome")
