"""PostgreSQL's SQL shared by the store's reads and writes, and a WHERE clause builder."""

from __future__ import annotations

from typing import Any

# The database clock in milliseconds: leases and event times mean the same on every host.
NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
# The head is a one-row counter that every appending transaction bumps just before COMMIT.
HEAD_SQL = "SELECT position FROM opstream_head"


class Where:
    """A WHERE clause with numbered parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def add(self, template: str, value: Any) -> None:
        self.clauses.append(template.format(self.param(value)))

    def equal(self, column: str, value: Any) -> None:
        if value is not None:
            self.add(column + " = {}", value)

    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


__all__ = ["HEAD_SQL", "NOW_MS", "Where"]
