"""Logs: the format (text or JSON lines), and stream tokens kept out of every access line.

Whoever owns the process configures logging: ``opstream serve`` and ``opstream worker``
call ``configure``; under ``uvicorn --factory`` or in a host application, uvicorn or the
host has, and ``adopt`` (called by ``create_app``) only adds what opstream promises
whatever runs it — tokens redacted from uvicorn's access log, ``OPSTREAM_LOG_FORMAT=json``
honoured, and opstream's own records not lost when nobody handles them.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The loggers uvicorn writes to (its access lines go to uvicorn.access).
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class RedactTokens(logging.Filter):
    """Stream tokens travel in URLs (EventSource cannot send headers); keep them out of logs."""

    PATTERN = re.compile(r"(access_token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in args)
        record.msg = redact(str(record.msg))
        return True


def redact(text: str) -> str:
    return RedactTokens.PATTERN.sub(r"\1[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``; an access
    line adds ``client``, ``method``, ``path``, ``httpVersion`` and ``status``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            entry.update(
                client=client, method=method, path=path, httpVersion=http_version, status=status
            )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _rfc3339(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


REDACT = RedactTokens()


def protect_access_log() -> None:
    """Redact stream tokens from uvicorn's access lines, however uvicorn was started (a
    filter on the logger sees each record before any handler, whoever configured them)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if REDACT not in logger.filters:
            logger.addFilter(REDACT)


def configure(level: str, log_format: str) -> None:
    """The process's logging, for the process that owns it (``serve``, ``worker``): one
    handler on stderr in ``log_format``, every logger (uvicorn's too) propagating to it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    protect_access_log()


OWN_HANDLER = "opstream-default"


def adopt(level: str, log_format: str) -> None:
    """What opstream needs from logging that someone else configured (plain uvicorn, a
    host application): redacted access lines, JSON when asked for, and a handler for
    opstream's own records if none would take them (uvicorn configures only its loggers)."""
    protect_access_log()
    if log_format == "json":
        for name in (*UVICORN_LOGGERS, ""):
            for handler in logging.getLogger(name).handlers:
                handler.setFormatter(JsonFormatter())
    ours = logging.getLogger("opstream")
    if not ours.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(OWN_HANDLER)
        handler.setFormatter(formatter(log_format))
        ours.addHandler(handler)
        ours.setLevel(level.upper())
