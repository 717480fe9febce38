"""opstream: an event-sourced tracker for long-running operations behind an HTTP API.

The public face, for teams that write handlers and for programs that follow operations::

    from opstream import kind, Context, Result, Retryable   # write a kind
    from opstream import Client, AsyncClient       # start and follow operations

Names are imported on first use, so importing the client never loads the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from opstream.app.client import AsyncClient, Client
    from opstream.app.runtime.context import Context
    from opstream.app.runtime.kinds import Result, Retryable, kind
    from opstream.app.runtime.sync_context import SyncContext

# Each public name and the module that defines it.
_PUBLIC = {
    "kind": "opstream.app.runtime.kinds",
    "Result": "opstream.app.runtime.kinds",
    "Retryable": "opstream.app.runtime.kinds",
    "SyncContext": "opstream.app.runtime.sync_context",
    "Context": "opstream.app.runtime.context",
    "Client": "opstream.app.client",
    "AsyncClient": "opstream.app.client",
}

__all__ = [
    "AsyncClient",
    "Client",
    "Context",
    "Result",
    "Retryable",
    "SyncContext",
    "__version__",
    "kind",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'opstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
