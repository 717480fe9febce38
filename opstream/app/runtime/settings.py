"""Settings: every one a command-line flag and an ``OPSTREAM_*`` environment variable."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from opstream.app.runtime.retry_schedule import DEFAULT_SCHEDULE, parse_schedule
from opstream.app.runtime.signing import parse_keyring

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database: str = "sqlite:///opstream.db"
    handlers: tuple[str, ...] = ()
    no_demo: bool = False
    concurrency: int = 4
    lease_seconds: float = 15.0
    max_attempts: int = 3
    max_body_bytes: int = 1024 * 1024
    heartbeat_seconds: float = 15.0
    sqlite_synchronous: str = "FULL"
    webhook_secret: str = field(default="", repr=False)
    webhook_allow: tuple[str, ...] = ()
    webhook_retry_schedule: str = DEFAULT_SCHEDULE
    webhook_connect_seconds: float = 5.0
    webhook_timeout_seconds: float = 15.0
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = True
    tokens: str = ""
    tokens_file: str = ""
    worker_tokens: str = field(default="", repr=False)
    max_result_bytes: int = 16 * 1024 * 1024
    max_claim_wait_seconds: float = 60.0
    secret: str = ""
    stream_token_seconds: int = 300
    insecure: bool = False
    result_ttl_seconds: float = 24 * 3600
    history_ttl_seconds: float = 7 * 24 * 3600
    tombstone_ttl_seconds: float = 30 * 24 * 3600
    idempotency_ttl_seconds: float = 24 * 3600
    sweep_seconds: float = 60.0
    max_in_flight: int = 1000
    create_rate: float = 50.0
    poll_rate: float = 2.0
    max_streams: int = 1000
    long_poll_seconds: float = 20.0
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse values the service would misbehave with: a negative heartbeat breaks every
        stream, a zero lease is lost as soon as it is taken. Raises ``ValueError``."""
        for name, (low, open_below) in LOWEST.items():
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{_flag(name)} must be a finite number, not {value}")
            if value < low or (open_below and value == low):
                bound = f"above {low:g}" if open_below else f"at least {low:g}"
                raise ValueError(f"{_flag(name)} must be {bound}, not {value:g}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"{_flag('port')} must be a TCP port (0-65535), not {self.port}")
        if self.sqlite_synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(
                f"{_flag('sqlite_synchronous')} must be one of {', '.join(SYNCHRONOUS)}, "
                f"not {self.sqlite_synchronous!r}"
            )
        # Webhook secrets and schedule are checked here so that every process refuses a bad
        # one at start, whether or not it sends webhooks itself.
        parse_schedule(self.webhook_retry_schedule)
        if self.webhook_secret.strip():
            parse_keyring(self.webhook_secret)
        if self.log_format not in LOG_FORMATS:
            raise ValueError(
                f"{_flag('log_format')} must be one of {', '.join(LOG_FORMATS)}, "
                f"not {self.log_format!r}"
            )
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(
                f"{_flag('log_level')} must be one of {', '.join(LOG_LEVELS)}, "
                f"not {self.log_level!r}"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``OPSTREAM_*`` variables, then ``overrides`` (flags) that are set.

        Raises ``ValueError`` naming the variable or flag whose value is not usable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = variable_of(f.name)
            raw = env.get(variable)
            if raw is not None and raw != "":
                try:
                    values[f.name] = _parse(f.name, raw)
                except ValueError:
                    raise ValueError(f"{variable}: not a {f.type}: {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# The lowest value each number may take, and whether that value itself is refused.
LOWEST: dict[str, tuple[float, bool]] = {
    "concurrency": (0, False),  # 0: API only
    "lease_seconds": (0, True),
    "max_attempts": (1, False),
    "max_body_bytes": (1, False),
    "heartbeat_seconds": (0, True),
    "webhook_connect_seconds": (0, True),
    "webhook_timeout_seconds": (0, True),
    "stream_token_seconds": (1, False),
    "result_ttl_seconds": (0, False),
    "history_ttl_seconds": (0, False),
    "tombstone_ttl_seconds": (0, False),
    "idempotency_ttl_seconds": (0, False),
    "sweep_seconds": (0, True),
    "max_in_flight": (1, False),
    "create_rate": (0, True),
    "poll_rate": (0, True),
    "max_streams": (1, False),
    "max_result_bytes": (1, False),
    "max_claim_wait_seconds": (0, False),
    "long_poll_seconds": (0, True),
}
SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


def flag_of(name: str) -> str:
    """The command-line flag of a setting: ``--heartbeat-seconds``."""
    return "--" + name.replace("_", "-")


def variable_of(name: str) -> str:
    """The environment variable of a setting: ``OPSTREAM_HEARTBEAT_SECONDS``."""
    return "OPSTREAM_" + name.upper()


def _flag(name: str) -> str:
    return f"{flag_of(name)} ({variable_of(name)})"


HELP = {
    "host": "interface to listen on",
    "port": "TCP port to listen on",
    "database": "sqlite:///path/to/file.db or postgresql://user@host/db",
    "handlers": "modules or .py files to import that register operation kinds "
    "(comma-separated in env)",
    "no_demo": "leave the shipped demo kinds out",
    "concurrency": "operations each process runs at once (0: API only, no workers)",
    "lease_seconds": "how long a worker's claim lasts without renewal",
    "max_attempts": "attempts before an operation whose worker died is failed",
    "max_body_bytes": "largest request body accepted",
    "heartbeat_seconds": "seconds between SSE keep-alive comments (a stream whose client "
    "stopped reading is closed within two of them)",
    "sqlite_synchronous": "FULL (survives power loss) or NORMAL (survives a crash)",
    "webhook_secret": "whsec_<base64> key (24-64 bytes) that signs webhooks; several, newest "
    "first, while rotating (unset: a random one per process)",
    "webhook_allow": "hosts, *.suffixes, addresses or CIDRs webhooks may reach though not global",
    "webhook_retry_schedule": "delays between webhook attempts (5s,5m,30m,2h,…; ±20% jitter)",
    "webhook_connect_seconds": "webhook DNS and connect timeout",
    "webhook_timeout_seconds": "webhook timeout for a whole attempt",
    "log_level": "debug, info, warning, error or critical",
    "log_format": "text, or json for one JSON object per line (access lines included)",
    "access_log": "log each request at info, stream tokens redacted (serve only; under "
    "uvicorn, its --no-access-log)",
    "tokens": "bearer tokens as tenant:token,tenant:token (none: open, loopback only)",
    "worker_tokens": "worker-role tokens (HTTP workers, /leases) as tenant:token,...",
    "max_result_bytes": "largest result an HTTP worker may upload (PUT /leases/{id}/result)",
    "max_claim_wait_seconds": "longest a claim (POST /leases) is held waiting for work, "
    "whatever its wait asks: keep it under a proxy's read timeout",
    "tokens_file": 'JSON file {"tenants": {"acme": {"tokens": [...], "webhookSecret": ...}}}',
    "secret": "key that signs stream tokens; share it between servers behind one address",
    "stream_token_seconds": "how long a stream token (for URLs) stays valid",
    "insecure": "allow running without tokens on a non-loopback address",
    "result_ttl_seconds": "after an operation ends, its result is kept this long; then 410",
    "history_ttl_seconds": "after an operation ends, its history is compacted after this",
    "tombstone_ttl_seconds": "after an operation ends, it is forgotten (404) after this",
    "idempotency_ttl_seconds": "an Idempotency-Key is remembered this long",
    "sweep_seconds": "how often the retention sweeper runs",
    "max_in_flight": "operations a tenant may have queued or running at once",
    "create_rate": "operations a tenant may create per second (burst: 2 seconds' worth)",
    "poll_rate": "status requests per second per operation before 429 (long-polls exempt)",
    "max_streams": "SSE streams a tenant may hold open in one process",
    "long_poll_seconds": "how long a Durable Stream long-poll (live=long-poll) waits for news",
    "cors_origins": "origins whose pages may call the API, e.g. https://app.example.com, "
    "or * for any (comma-separated in env; none: no cross-origin access)",
}


def _parse(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
