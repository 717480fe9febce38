"""Kinds rows, the same on both backends: decoding a stored kind, and the SQL-free rules of
the registry's tables (how long a worker's heartbeat counts, when an old one is removed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from opstream.events.kinds import KindRecord

KIND_COLUMNS = "name, description, params_schema, timeout_seconds, max_attempts, updated_at"
# Heartbeats that ran out this long ago are removed by the next heartbeat: the table holds
# the workers of about a day, however many came and went.
FORGET_WORKERS_AFTER_MS = 24 * 3600 * 1000


def kind_of(row: Sequence[Any], workers: Mapping[str, int] | None = None) -> KindRecord:
    """A stored kind (``KIND_COLUMNS`` in order), with its live worker count if given."""
    name, description, schema, timeout, attempts, updated_at = row[:6]
    loaded = orjson.loads(schema) if isinstance(schema, bytes | str) else schema
    return KindRecord(
        name=str(name),
        description=str(description),
        params_schema=loaded,
        timeout_seconds=None if timeout is None else float(timeout),
        max_attempts=None if attempts is None else int(attempts),
        updated_at=int(updated_at),
        workers=(workers or {}).get(str(name), 0),
    )


def kind_values(kind: KindRecord) -> tuple[str, str, str, float | None, int | None]:
    """The columns a put writes (``updated_at`` is the store's clock)."""
    schema = orjson.dumps(kind.params_schema).decode()
    return kind.name, kind.description, schema, kind.timeout_seconds, kind.max_attempts


__all__ = ["FORGET_WORKERS_AFTER_MS", "KIND_COLUMNS", "kind_of", "kind_values"]
