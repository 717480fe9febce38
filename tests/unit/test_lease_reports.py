"""How the HTTP worker protocol reads reported events (pure: no server)."""

from __future__ import annotations

import pytest

from opstream.app.http.leases import _event, _one_line
from opstream.app.http.problems import InvalidRequest, ReservedEventType
from opstream.app.runtime.context import one_line


@pytest.mark.parametrize(
    "message",
    ["tick", "step 3 of 5", " lead", "trail ", "two  spaces", "tab\there", "nl\nx", "é ok",
     "x" * 1001, "\x00nul", "\u2028sep"],
)  # fmt: skip
def test_the_fast_path_keeps_messages_exactly_as_one_line_would(message: str) -> None:
    assert _one_line(message) == one_line(message)


def test_progress_is_checked_and_clamped() -> None:
    event = _event({"type": "ProgressUpdated", "details": {"percent": 140}}, 0)
    assert event.details["percent"] == 100.0 and event.message == "100%"
    with pytest.raises(InvalidRequest):
        _event({"type": "ProgressUpdated", "details": {"percent": "half"}}, 0)
    with pytest.raises(InvalidRequest):
        _event({"type": "StageStarted", "details": {}}, 0)


@pytest.mark.parametrize("type_", ["OperationSucceeded", "OperationRetried", "OperationQueued"])
def test_lifecycle_types_are_the_servers(type_: str) -> None:
    with pytest.raises(ReservedEventType):
        _event({"type": type_}, 0)


def test_a_teams_own_type_passes_with_its_details() -> None:
    event = _event({"type": "FraudCheckStarted", "message": "a\nb", "details": {"x": [1]}}, 0)
    assert (event.type, event.message, event.details) == ("FraudCheckStarted", "a b", {"x": [1]})
