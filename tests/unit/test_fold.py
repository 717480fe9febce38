"""The fold: an operation is exactly what its events say, and illegal histories are refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from opstream.events import model as m
from opstream.events.errors import InvalidTransition
from opstream.events.fold import (
    CANCELLED,
    CANCELLING,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Progress,
    apply,
    estimate_remaining,
    fold,
)
from opstream.events.recovery import recovery_events

OP = "op_test"


def history(*specs: tuple[str, dict[str, Any]], start: int = 1_000_000) -> list[m.Event]:
    """Events 1..n of one operation, one second apart."""
    events = []
    for index, (type_, details) in enumerate(specs):
        events.append(
            m.Event(
                OP,
                index + 1,
                100 + index,
                type_,
                type_.lower(),
                start + index * 1000,
                details,
                "demo.countdown",
            )
        )
    return events


QUEUED_EVENT = (m.OPERATION_QUEUED, {"kind": "demo.countdown", "params": {"steps": 2}})


def test_empty_history_is_no_operation() -> None:
    assert fold([]) is None


def test_a_full_successful_run() -> None:
    op = fold(
        history(
            QUEUED_EVENT,
            (m.OPERATION_STARTED, {"attempt": 1}),
            (m.STAGE_STARTED, {"stage": "counting"}),
            (m.PROGRESS_UPDATED, {"percent": 50.0, "stage": "counting"}),
            (m.OPERATION_SUCCEEDED, {"contentType": "application/json", "size": 11}),
        )
    )
    assert op is not None
    assert op.status == SUCCEEDED
    assert op.kind == "demo.countdown"
    assert op.params == {"steps": 2}
    assert op.attempt == 1
    assert op.last_seq == 5
    assert op.created_at == 1_000_000
    assert op.started_at == 1_001_000
    assert op.finished_at == op.updated_at == 1_004_000
    assert op.progress.percent == 100.0
    assert op.progress.stage == "counting"
    assert op.result == {"contentType": "application/json", "size": 11}
    assert op.has_result and op.is_terminal and not op.is_gone


def test_progress_estimates_the_time_remaining_from_its_pace() -> None:
    events = history(QUEUED_EVENT, (m.OPERATION_STARTED, {}), (m.PROGRESS_UPDATED, {"percent": 25}))
    op = fold(events)
    assert op is not None
    # 1 s for 25 %: 3 s for the remaining 75 %.
    assert op.progress.estimated_time_remaining == 3.0
    assert op.progress_updates == 1


def test_a_handlers_eta_wins_over_the_estimate() -> None:
    op = fold(
        history(
            QUEUED_EVENT,
            (m.OPERATION_STARTED, {}),
            (m.PROGRESS_UPDATED, {"percent": 25, "estimatedTimeRemaining": 42}),
        )
    )
    assert op is not None and op.progress.estimated_time_remaining == 42.0


@pytest.mark.parametrize(
    ("started", "now", "percent", "expected"),
    [(None, 5, 10.0, None), (0, 1000, 0.0, None), (0, 1000, 100.0, 0.0), (0, 2000, 50.0, 2.0)],
)
def test_estimate_remaining(
    started: int | None, now: int, percent: float, expected: float | None
) -> None:
    assert estimate_remaining(started, now, percent) == expected


def test_failure_carries_a_readable_error() -> None:
    error = {"type": "HandlerError", "message": "disk full"}
    op = fold(
        history(QUEUED_EVENT, (m.OPERATION_STARTED, {}), (m.OPERATION_FAILED, {"error": error}))
    )
    assert op is not None
    assert op.status == FAILED and op.error == error and not op.has_result


def test_cancel_while_running_goes_through_cancelling() -> None:
    events = history(
        QUEUED_EVENT,
        (m.OPERATION_STARTED, {}),
        (m.CANCELLATION_REQUESTED, {}),
        (m.OPERATION_CANCELLED, {}),
    )
    assert fold(events[:3]).status == CANCELLING  # type: ignore[union-attr]
    assert fold(events).status == CANCELLED  # type: ignore[union-attr]


def test_retry_goes_back_to_queued_and_counts_attempts() -> None:
    op = fold(
        history(
            QUEUED_EVENT,
            (m.OPERATION_STARTED, {"attempt": 1}),
            (m.PROGRESS_UPDATED, {"percent": 40}),
            (m.OPERATION_RETRIED, {"attempt": 2}),
            (m.OPERATION_STARTED, {"attempt": 2}),
        )
    )
    assert op is not None
    assert op.status == RUNNING and op.attempt == 2
    assert op.progress.percent == 0.0, "a retry starts the progress over"


def test_attempts_handed_back_by_a_worker_shutting_down_are_not_spent() -> None:
    """Three restarts during a long operation, then its worker dies: it is retried, not
    failed, with three attempts allowed; the attempt number still grows (it fences)."""
    steps: list[tuple[str, dict[str, Any]]] = [QUEUED_EVENT]
    for attempt in (1, 2, 3):
        steps.append((m.OPERATION_STARTED, {"attempt": attempt}))
        steps.append((m.OPERATION_RETRIED, {"handedBack": True}))
    steps.append((m.OPERATION_STARTED, {"attempt": 4}))
    op = fold(history(*steps))
    assert op is not None and op.attempt == 4 and op.handed_back == 3
    [retry] = recovery_events(op, max_attempts=3)
    assert retry.type == m.OPERATION_RETRIED and retry.details["attempt"] == 5
    # A handback, then a crash (recovery's retry): only the crash and the running attempt count.
    crashed = fold(
        history(
            *steps[:3],
            (m.OPERATION_STARTED, {"attempt": 2}),
            (m.OPERATION_RETRIED, {"attempt": 3}),
            (m.OPERATION_STARTED, {"attempt": 3}),
        )
    )
    assert crashed is not None and crashed.handed_back == 1
    assert recovery_events(crashed, max_attempts=3)[0].type == m.OPERATION_RETRIED
    assert recovery_events(crashed, max_attempts=2)[0].type == m.OPERATION_FAILED


def test_deleting_the_result_keeps_the_operation_but_deleting_it_makes_it_gone() -> None:
    done = [QUEUED_EVENT, (m.OPERATION_STARTED, {}), (m.OPERATION_SUCCEEDED, {})]
    only_result = fold(history(*done, (m.RESULT_DELETED, {"scope": "result"})))
    whole = fold(history(*done, (m.RESULT_DELETED, {"scope": "operation"})))
    assert only_result is not None and whole is not None
    assert only_result.result_deleted and not only_result.is_gone and not only_result.has_result
    assert whole.is_gone


def test_custom_events_are_allowed_while_running() -> None:
    op = fold(history(QUEUED_EVENT, (m.OPERATION_STARTED, {}), ("FraudCheckStarted", {})))
    assert op is not None and op.status == RUNNING and op.progress.message == "fraudcheckstarted"


@pytest.mark.parametrize(
    "illegal",
    [
        [QUEUED_EVENT, (m.PROGRESS_UPDATED, {"percent": 1})],  # progress before start
        [QUEUED_EVENT, (m.OPERATION_SUCCEEDED, {})],  # success without running
        [QUEUED_EVENT, (m.OPERATION_STARTED, {}), (m.OPERATION_STARTED, {})],
        [
            QUEUED_EVENT,
            (m.OPERATION_STARTED, {}),
            (m.OPERATION_SUCCEEDED, {}),
            (m.PROGRESS_UPDATED, {"percent": 1}),
        ],  # anything but output events after the end
        [QUEUED_EVENT, (m.RESULT_DELETED, {})],  # no output to delete yet
        [(m.OPERATION_STARTED, {})],  # a history starts with OperationQueued
    ],
)
def test_illegal_histories_are_refused(illegal: list[tuple[str, dict[str, Any]]]) -> None:
    with pytest.raises(InvalidTransition):
        fold(history(*illegal))


def test_seq_must_follow_without_a_gap() -> None:
    first, second = history(QUEUED_EVENT, (m.OPERATION_STARTED, {}))
    skipped = m.Event(OP, 3, 101, m.OPERATION_STARTED, "", 0, {})
    state = apply(None, first)
    assert state.status == QUEUED
    with pytest.raises(InvalidTransition):
        apply(state, skipped)
    assert apply(state, second).status == RUNNING


def test_each_fold_step_is_a_fresh_copy_holding_only_the_fields() -> None:
    """The fold copies an operation's ``__dict__`` per event: nothing else may live there."""
    events = history(QUEUED_EVENT, (m.OPERATION_STARTED, {"attempt": 1}), ("Tick", {}))
    before = fold(events[:2])
    after = apply(before, events[2])
    assert after is not before and after.last_seq == 3 and before.last_seq == 2
    assert set(vars(after)) == {f.name for f in dataclasses.fields(after)}
    assert after == dataclasses.replace(
        before, last_seq=3, updated_at=events[2].happened_at, progress=after.progress
    )


@pytest.mark.parametrize(
    "value",
    [
        m.Event(OP, 3, 7, "Tick", "tick", 1_000, {"i": 1}, "kind", "tenant"),
        Progress(12.5, "upload", "halfway", 30.0),
    ],
    ids=["Event", "Progress"],
)
def test_hand_written_constructors_keep_frozen_dataclass_behaviour(value: Any) -> None:
    """Event and Progress fill their ``__dict__`` in ``__init__`` for speed; they must stay
    what the generated constructor made: immutable, compared and copied field by field."""
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    assert set(vars(value)) == set(fields)
    assert value == type(value)(**fields)
    assert dataclasses.replace(value) == value and dataclasses.replace(value) is not value
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.message = "changed"
    assert type(value)(*fields.values()) == value
