"""The projection of an operation, to and from the JSON a store keeps beside its events."""

from __future__ import annotations

from typing import Any

import orjson

from opstream.events.fold import Operation, Progress


def dump_operation(operation: Operation) -> bytes:
    # orjson encodes dataclasses natively: the same bytes as via asdict(), 20 times faster.
    return orjson.dumps(operation)


def load_operation(raw: bytes | str) -> Operation:
    data: dict[str, Any] = orjson.loads(raw)
    data["progress"] = Progress(**data["progress"])
    return Operation(**data)


def dump_details(details: dict[str, Any]) -> bytes:
    return orjson.dumps(details)


def load_details(raw: bytes | str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(raw)
    return value
