"""Loading the ``--handlers`` modules that register a team's kinds.

A new user runs ``opstream serve --handlers billing`` in the folder that holds
``billing.py``, as uvicorn would let them; the console script does not put the current
folder on the import path, so it is added here. A path (``./billing.py``,
``jobs/billing.py``) is loaded as a file, its folder on the path so that it can import its
neighbours. A module that fails to import is one ``HandlersError`` naming it — a line the
command prints, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


class HandlersError(ImportError):
    """A ``--handlers`` module could not be imported (the message names it and says why)."""


def is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def load_handlers(specs: Iterable[str]) -> list[ModuleType]:
    """Import each module name or file path in ``specs``, in order."""
    return [load_one(spec) for spec in specs]


def load_one(spec: str) -> ModuleType:
    try:
        return _load_file(Path(spec)) if is_path(spec) else _load_module(spec)
    except HandlersError:
        raise
    except Exception as exc:  # whatever the module raised while it ran
        raise HandlersError(f"--handlers {spec}: {_why(exc)}") from exc


def _load_module(name: str) -> ModuleType:
    _on_path(os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise HandlersError(
                f"--handlers {name}: no module named {exc.name!r} in {os.getcwd()} or on "
                "the Python path (give a file path like ./billing.py to load a file)"
            ) from None
        raise


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise HandlersError(f"--handlers {path}: no such file")
    resolved = path.resolve()
    name = resolved.stem
    known = sys.modules.get(name)
    if known is not None and getattr(known, "__file__", None) == str(resolved):
        return known  # loaded already (a second engine in one process)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise HandlersError(f"--handlers {path}: not a Python module")
    _on_path(str(resolved.parent))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _on_path(folder: str) -> None:
    if folder not in sys.path and not (folder == os.getcwd() and "" in sys.path):
        sys.path.insert(0, folder)


def _why(exc: BaseException) -> str:
    """One line: the exception's type and message, and where in the module for a syntax
    error (which is what the user has to go and fix)."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["HandlersError", "is_path", "load_handlers"]
