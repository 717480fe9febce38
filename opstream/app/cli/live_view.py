"""The live progress bar of ``opstream watch`` on a terminal: status, stage, percent, ETA and
message pinned below the event lines, which scroll above it as they arrive.

``WatchState`` is what the bar shows, kept apart from the drawing so that it can be tested
with plain events and a fake clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from rich.text import Text

from opstream.app.cli.output import STATUS_STYLES
from opstream.app.client import Operation
from opstream.events.fold import estimate_remaining
from opstream.events.model import (
    OPERATION_CANCELLED,
    OPERATION_FAILED,
    OPERATION_SUCCEEDED,
    Event,
)

EVENT_STYLES = {
    OPERATION_SUCCEEDED: "bold green",
    OPERATION_FAILED: "bold red",
    OPERATION_CANCELLED: "bold yellow",
    "CancellationRequested": "yellow",
    "OperationRetried": "magenta",
}


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
    """``H:MM:SS``, as rich shows elapsed time."""
    if seconds is None:
        return "-:--:--"
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


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
