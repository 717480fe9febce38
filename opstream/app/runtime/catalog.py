"""The kinds every process can accept: the store's registry, read through a short cache.

An API server validates a new operation's params against the schema in the store, so it
never needs a team's code (``opstream worker`` registers the kinds it serves; so does
``PUT /kinds/{name}``). A kind is re-read at most every ``CACHE_SECONDS``; a name the cache
does not know is always looked up, so a kind registered a moment ago is usable at once.
Compiled validators are kept by schema, so a re-read that changed nothing compiles nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from opstream.app.runtime.kinds import KIND_NAME, FieldError, Registry, check_params
from opstream.events.kinds import KindRecord
from opstream.events.policy import Policy
from opstream.events.store import EventStore

CACHE_SECONDS = 2.0
MAX_DESCRIPTION = 2000


class InvalidKind(ValueError):
    """A kind definition that cannot be stored; ``field`` names the part that is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class KnownKind:
    """A stored kind with its compiled schema."""

    record: KindRecord
    validator: Draft202012Validator

    def check(self, params: Any) -> list[FieldError]:
        return check_params(self.validator, params)


def kind_record(name: str, body: Any) -> KindRecord:
    """The ``PUT /kinds/{name}`` body as a kind, every field checked (``InvalidKind``)."""
    if not KIND_NAME.match(name):
        raise InvalidKind(f"kind names look like 'team.job' (lowercase, dots): {name!r}", "name")
    if not isinstance(body, dict):
        raise InvalidKind("the body must be a JSON object with paramsSchema", "body")
    unknown = sorted(set(body) - {"description", "paramsSchema", "timeoutSeconds", "maxAttempts"})
    if unknown:
        raise InvalidKind(f"unknown fields: {', '.join(unknown)}", unknown[0])
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidKind(f"description must be text of at most {MAX_DESCRIPTION}", "description")
    schema = body.get("paramsSchema")
    if not isinstance(schema, dict):
        raise InvalidKind("paramsSchema is required: a JSON Schema object", "paramsSchema")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        message = f"paramsSchema is not a valid JSON Schema: {exc.message}"
        raise InvalidKind(message, "paramsSchema") from None
    timeout = body.get("timeoutSeconds")
    if timeout is not None and not (
        isinstance(timeout, int | float) and not isinstance(timeout, bool)
        and math.isfinite(timeout) and timeout > 0
    ):  # fmt: skip
        raise InvalidKind("timeoutSeconds must be a number above 0", "timeoutSeconds")
    attempts = body.get("maxAttempts")
    if isinstance(attempts, float) and attempts.is_integer():
        attempts = int(attempts)  # 3.0 is an integer to JSON Schema, and so to us
    if attempts is not None and not (
        isinstance(attempts, int) and not isinstance(attempts, bool) and 1 <= attempts <= 100
    ):
        raise InvalidKind("maxAttempts must be a whole number from 1 to 100", "maxAttempts")
    return KindRecord(
        name, description, schema, None if timeout is None else float(timeout), attempts
    )


class KindCatalog:
    """The store's kinds, cached; the local registry's kinds where the store has none (a
    process whose registration has not reached the store yet)."""

    def __init__(self, store: EventStore, local: Registry, default_max_attempts: int = 3) -> None:
        self.store = store
        self.local = local
        self.default_max_attempts = default_max_attempts
        self._cache: dict[str, tuple[float, KnownKind]] = {}
        self._validators: dict[bytes, Draft202012Validator] = {}

    async def register_local(self) -> None:
        """Put this process's Python kinds in the store (a process that serves them
        starting up: their schema and policy are the code's)."""
        for kind in self.local:
            await self.store.put_kind(kind.record())
            self.forget(kind.name)

    async def put(self, record: KindRecord) -> bool:
        """Store ``record`` (already checked: ``kind_record``); ``True`` when new."""
        created = await self.store.put_kind(record)
        self.forget(record.name)
        return created

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    async def find(self, name: str) -> KnownKind | None:
        cached = self._cache.get(name)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        record = await self.store.get_kind(name)
        if record is None:
            local = self.local.get(name)
            if local is None:
                self.forget(name)
                return None
            record = local.record()
        known = KnownKind(record, self._validator(record.params_schema))
        self._cache[name] = (time.monotonic() + CACHE_SECONDS, known)
        return known

    async def policy(self, name: str) -> Policy:
        """The attempt policy of kind ``name`` (the process's defaults for an unknown one)."""
        known = await self.find(name)
        return Policy.of(None if known is None else known.record, self.default_max_attempts)

    async def names(self) -> list[str]:
        return sorted({kind.name for kind in await self.list()})

    async def list(self) -> list[KindRecord]:
        """Every kind: the store's (with live worker counts) and this process's own."""
        stored = {kind.name: kind for kind in await self.store.list_kinds()}
        for kind in self.local:
            stored.setdefault(kind.name, kind.record())
        return [stored[name] for name in sorted(stored)]

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        validator = self._validators.get(key)
        if validator is None:
            if len(self._validators) > 1000:  # a bound, however often schemas change
                self._validators.clear()
            validator = self._validators[key] = Draft202012Validator(schema)
        return validator


__all__ = ["CACHE_SECONDS", "InvalidKind", "KindCatalog", "KnownKind", "kind_record"]
