"""The registry of operation kinds: a name, a JSON Schema for the params, a handler.

Register your own with the ``kind`` decorator in any module and pass the module (or its
file) to ``opstream serve --handlers``::

    from opstream import kind

    @kind("billing.invoice", schema={"type": "object", "properties": {...}}, timeout_seconds=60)
    async def invoice(ctx, params):
        await ctx.progress(50, "half way")
        return {"invoice": 42}

A plain ``def`` handler is run in a thread pool with a context whose reporting calls need
no ``await`` (``SyncContext``). This registry is what one process can *run*; the kinds every
process can *accept* live in the store (``catalog``), where a serving process registers its
kinds when it starts.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from opstream.events.kinds import KindRecord
from opstream.events.store import StoredResult

# An ``async def`` (awaited on the loop) or a plain ``def`` (run in a thread) taking the
# context and the params.
Handler = Callable[[Any, dict[str, Any]], Awaitable[Any] | Any]
KIND_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$")


class Retryable(Exception):
    """Raise it from a handler when the attempt failed for a reason that may pass (a busy
    downstream, a timeout of its own): the operation is queued again after a backoff while
    the kind's ``max_attempts`` allow, else it fails with this message. ``error_type``
    names the failure in the operation's ``error``."""

    def __init__(self, message: str, *, error_type: str = "Retryable") -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class Result:
    """A handler's output that is not JSON: any bytes, served with their content type."""

    body: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class FieldError:
    """One reason params fail a kind's schema, named by the field it concerns."""

    field: str
    pointer: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "pointer": self.pointer, "message": self.message}


def check_params(validator: Draft202012Validator, params: Any) -> list[FieldError]:
    """Every way ``params`` fails the schema, in a stable order; empty when valid."""
    found = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    problems = []
    for error in found:
        path = [str(part) for part in error.absolute_path]
        # A missing property is the parent's error; name the property itself.
        if error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            path += missing[:1]
        name = ".".join(["params", *path])
        pointer = "/params" + "".join(f"/{part}" for part in path)
        problems.append(FieldError(name, pointer, error.message))
    return problems


@dataclass(frozen=True)
class Kind:
    """A kind this process can run: its handler, schema and policy. ``concurrency`` caps
    how many of its operations one process runs at once (``None``: the worker's limit)."""

    name: str
    handler: Handler
    schema: dict[str, Any]
    description: str = ""
    timeout_seconds: float | None = None
    max_attempts: int | None = None
    concurrency: int | None = None
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.schema)
        object.__setattr__(self, "validator", Draft202012Validator(self.schema))
        if self.timeout_seconds is not None and not self.timeout_seconds > 0:
            raise ValueError(f"kind {self.name}: timeout_seconds must be above 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"kind {self.name}: max_attempts must be at least 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"kind {self.name}: concurrency must be at least 1")

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def check(self, params: Any) -> list[FieldError]:
        """Every way ``params`` fails the schema, in a stable order; empty when valid."""
        return check_params(self.validator, params)

    def record(self) -> KindRecord:
        """The kind as the store keeps it."""
        return KindRecord(
            self.name, self.description, self.schema, self.timeout_seconds, self.max_attempts
        )

    def to_dict(self) -> dict[str, Any]:
        return self.record().to_dict()


class Registry:
    """The kinds this process can start and run."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        schema: dict[str, Any],
        description: str = "",
        timeout_seconds: float | None = None,
        max_attempts: int | None = None,
        concurrency: int | None = None,
    ) -> Kind:
        if not KIND_NAME.match(name):
            raise ValueError(f"kind names look like 'team.job' (lowercase, dots): {name!r}")
        if name in self._kinds and self._kinds[name].handler is not handler:
            raise ValueError(f"kind {name!r} is registered twice")
        registered = Kind(
            name,
            handler,
            schema,
            description or (handler.__doc__ or "").strip(),
            timeout_seconds=timeout_seconds,
            max_attempts=max_attempts,
            concurrency=concurrency,
        )
        self._kinds[name] = registered
        return registered

    def kind(
        self,
        name: str,
        *,
        schema: dict[str, Any],
        description: str = "",
        timeout_seconds: float | None = None,
        max_attempts: int | None = None,
        concurrency: int | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``: ``timeout_seconds`` stops an attempt that runs
        longer (the operation fails with ``Timeout``), ``max_attempts`` bounds the attempts
        after lost leases and retryable failures, ``concurrency`` caps how many of the
        kind's operations one process runs at once."""

        def decorate(handler: Handler) -> Handler:
            self.register(
                name,
                handler,
                schema=schema,
                description=description,
                timeout_seconds=timeout_seconds,
                max_attempts=max_attempts,
                concurrency=concurrency,
            )
            return handler

        return decorate

    def unregister(self, name: str) -> None:
        """Forget a kind (``--no-demo`` leaves the demo kinds out of a process)."""
        self._kinds.pop(name, None)

    def get(self, name: str) -> Kind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def __iter__(self) -> Any:
        return iter(self._kinds[name] for name in self.names())


def to_stored_result(value: Any) -> StoredResult:
    """What a handler returned, as bytes and a content type."""
    if isinstance(value, Result):
        return StoredResult(value.content_type, value.body)
    if isinstance(value, bytes | bytearray):
        return StoredResult("application/octet-stream", bytes(value))
    return StoredResult("application/json", orjson.dumps(value))


registry = Registry()
kind = registry.kind
