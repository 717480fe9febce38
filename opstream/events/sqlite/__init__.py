"""The embedded event store: one SQLite file, WAL, durable appends with group commit."""

from opstream.events.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
