"""Operation kinds as the store keeps them: the registry every process reads.

The store, not the importing process, is the source of truth for kinds: an API server
validates a new operation's params against the stored schema without importing the team's
code, and any worker (Python in-process, or over HTTP in any language) serves a kind by
name. Whether a schema is a valid JSON Schema is the app's check, before it stores one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KindRecord:
    """One registered kind: its schema and its policy. ``workers`` (only filled when
    listed) is how many workers asked for the kind within their last lease period."""

    name: str
    description: str
    params_schema: dict[str, Any]
    timeout_seconds: float | None = None
    max_attempts: int | None = None
    updated_at: int = 0
    workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "paramsSchema": self.params_schema,
            "timeoutSeconds": self.timeout_seconds,
            "maxAttempts": self.max_attempts,
            "workers": self.workers,
        }


__all__ = ["KindRecord"]
