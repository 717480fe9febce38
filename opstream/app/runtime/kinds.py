"""The registry of operation kinds: a name, a JSON Schema for the params, a handler.

Register your own with the ``kind`` decorator in any module and pass the module to
``opstream serve --handlers``::

    from opstream.app.runtime.kinds import kind

    @kind("billing.invoice", schema={"type": "object", "properties": {...}})
    async def invoice(ctx, params):
        await ctx.progress(50, "half way")
        return {"invoice": 42}
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from jsonschema import Draft202012Validator

from opstream.events.store import StoredResult

if TYPE_CHECKING:
    from opstream.app.runtime.context import Context

Handler = Callable[["Context", dict[str, Any]], Awaitable[Any]]
KIND_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$")


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


@dataclass(frozen=True)
class Kind:
    name: str
    handler: Handler
    schema: dict[str, Any]
    description: str = ""
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.schema)
        object.__setattr__(self, "validator", Draft202012Validator(self.schema))

    def check(self, params: Any) -> list[FieldError]:
        """Every way ``params`` fails the schema, in a stable order; empty when valid."""
        found = sorted(self.validator.iter_errors(params), key=lambda e: list(e.absolute_path))
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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "paramsSchema": self.schema}


class Registry:
    """The kinds this process can start and run."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}

    def register(
        self, name: str, handler: Handler, *, schema: dict[str, Any], description: str = ""
    ) -> Kind:
        if not KIND_NAME.match(name):
            raise ValueError(f"kind names look like 'team.job' (lowercase, dots): {name!r}")
        if name in self._kinds and self._kinds[name].handler is not handler:
            raise ValueError(f"kind {name!r} is registered twice")
        registered = Kind(name, handler, schema, description or (handler.__doc__ or "").strip())
        self._kinds[name] = registered
        return registered

    def kind(
        self, name: str, *, schema: dict[str, Any], description: str = ""
    ) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``."""

        def decorate(handler: Handler) -> Handler:
            self.register(name, handler, schema=schema, description=description)
            return handler

        return decorate

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
