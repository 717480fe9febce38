"""Settings: every one a command-line flag and an ``OPSTREAM_*`` environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database: str = "sqlite:///opstream.db"
    handlers: tuple[str, ...] = ()
    concurrency: int = 4
    lease_seconds: float = 15.0
    max_attempts: int = 3
    max_body_bytes: int = 1024 * 1024
    heartbeat_seconds: float = 15.0
    sqlite_synchronous: str = "FULL"
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``OPSTREAM_*`` variables, then ``overrides`` (flags) that are set."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("OPSTREAM_" + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


HELP = {
    "host": "interface to listen on",
    "port": "TCP port to listen on",
    "database": "sqlite:///path/to/file.db or postgresql://user@host/db",
    "handlers": "modules to import that register operation kinds (comma-separated in env)",
    "concurrency": "operations each process runs at once (0: API only, no workers)",
    "lease_seconds": "how long a worker's claim lasts without renewal",
    "max_attempts": "attempts before an operation whose worker died is failed",
    "max_body_bytes": "largest request body accepted",
    "heartbeat_seconds": "seconds between SSE keep-alive comments",
    "sqlite_synchronous": "FULL (survives power loss) or NORMAL (survives a crash)",
    "log_level": "debug, info, warning or error",
}


def _parse(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
