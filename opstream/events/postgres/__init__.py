"""The scale-out event store: PostgreSQL through asyncpg, for many servers and workers."""

from opstream.events.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
