"""The event store interface: what every backend (SQLite, PostgreSQL) must do, all of it.

A backend stores and fetches; the rules — which event may follow which, what an operation
looks like after them — live in ``fold.py`` and are applied by the backend inside its append
transaction, so the projection can never disagree with the history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opstream.events.fold import Operation
from opstream.events.kinds import KindRecord
from opstream.events.model import Event, NewEvent

CommitListener = Callable[[Sequence[Event]], None]


@dataclass(frozen=True)
class Lease:
    """A worker's claim on a running operation: who holds it, for which attempt."""

    operation_id: str
    owner: str
    attempt: int


@dataclass(frozen=True)
class StoredResult:
    """An operation's output: any bytes, with the content type to serve them under."""

    content_type: str
    body: bytes


@dataclass(frozen=True)
class Appended:
    """The operation after an append, and the events the append made durable.

    From ``create`` with an idempotency key that was already used for the same request,
    ``events`` is empty and ``operation`` is the operation that request created."""

    operation: Operation
    events: list[Event]

    @property
    def replayed(self) -> bool:
        return not self.events


@dataclass(frozen=True)
class Idempotency:
    """An ``Idempotency-Key`` and the fingerprint of the request that came with it."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class Retention:
    """How long each artifact is kept after its operation finished, in milliseconds."""

    result_ms: int  # then the result is deleted and the operation expires (410)
    history_ms: int  # then the history is compacted to the terminal event and after
    tombstone_ms: int  # then the operation is forgotten entirely (404)
    idempotency_ms: int  # after its creation, a key may be used again


@dataclass(frozen=True)
class Swept:
    """What one sweep did: events it appended (to announce) and rows it removed."""

    events: list[Event]
    compacted: int = 0
    forgotten: int = 0
    keys: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.events or self.compacted or self.forgotten or self.keys)


@dataclass(frozen=True)
class HistoryStart:
    """Where an operation's kept history begins: ``first_seq`` (1 unless compacted), and
    the operation as it stood just before that event (``None`` unless compacted)."""

    first_seq: int
    snapshot: Operation | None


class EventStore(Protocol):
    """Durable, ordered histories of operations, and the projection of each."""

    async def open(self) -> None:
        """Connect and create or migrate the schema; idempotent."""

    async def close(self) -> None:
        """Finish queued writes, then release every connection."""

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` with every batch of events this process commits, after commit."""

    async def create(
        self,
        operation_id: str,
        kind: str,
        params: dict[str, object],
        *,
        callback_url: str | None = None,
        tenant: str = "",
        idempotency: Idempotency | None = None,
    ) -> Appended:
        """Start a history with ``OperationQueued``, owned by ``tenant``.

        With ``idempotency``, the key is recorded (per tenant) in the same transaction; a key
        already recorded for the same fingerprint returns that operation instead (an
        ``Appended`` with no events), for another fingerprint raises ``IdempotencyMismatch``.
        """

    async def append(
        self,
        operation_id: str,
        events: Sequence[NewEvent],
        *,
        expected_seq: int | None = None,
        lease: Lease | None = None,
        result: StoredResult | None = None,
    ) -> Appended:
        """Append ``events`` atomically after the operation's last event.

        ``expected_seq`` makes the append conditional on the last ``seq`` (else
        ``SequenceConflict``); ``lease`` on the writer still holding it (else ``LeaseLost``).
        ``result`` is stored in the same transaction (with ``OperationSucceeded``). A
        ``ResultDeleted`` or ``OperationExpired`` event removes the stored result.
        """

    async def get(self, operation_id: str) -> Operation:
        """The operation's projection; ``OperationNotFound`` if it never existed."""

    async def list_operations(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        before: str | None = None,
        tenant: str | None = None,
    ) -> list[Operation]:
        """Operations newest first, optionally only those older than the id ``before``
        (and only ``tenant``'s, when given)."""

    async def count_operations(
        self, *, tenant: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, int]:
        """How many operations are in each status (only ``statuses``, only ``tenant``'s,
        when given); statuses with none are left out."""

    async def read(self, operation_id: str, *, after: int = 0, limit: int = 100) -> list[Event]:
        """The operation's events with ``seq > after``, oldest first."""

    async def read_all(
        self,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int = 100,
        kind: str | None = None,
        operation_id: str | None = None,
        tenant: str | None = None,
    ) -> list[Event]:
        """Events of all operations with ``after < position <= until``, in position order."""

    async def head(self) -> int:
        """The position below which every event is committed and readable."""

    # The schema version this code creates and writes (its newest migration).
    SCHEMA_VERSION: int

    async def schema_version(self) -> int:
        """The schema version the database is at, read from it now (so it must answer)."""

    async def wait_for_change(self, head: int, max_wait: float) -> int:
        """Once the store's head has moved past ``head`` (by any process), or after
        ``max_wait`` seconds, the head as the store last saw it: every event up to it is
        committed and readable. A move may be reported late, never missed."""

    async def get_result(self, operation_id: str) -> StoredResult | None:
        """The stored output, or ``None`` when there is none (not finished, or deleted)."""

    async def claim(
        self, owner: str, kinds: Sequence[str], lease_ms: int, *, tenant: str | None = None
    ) -> Appended | None:
        """Take the oldest queued operation of one of ``kinds`` (only ``tenant``'s, when
        given): append ``OperationStarted`` and hold its lease for ``lease_ms``. ``None``
        when nothing is queued. An operation queued again by a retryable failure waits out
        its backoff first."""

    async def renew(self, lease: Lease, lease_ms: int) -> Operation:
        """Extend a held lease; ``LeaseLost`` when it is no longer held."""

    async def recover(self, max_attempts: int, limit: int = 100) -> list[Event]:
        """Retry (or, past the kind's ``maxAttempts`` — ``max_attempts`` where the kind sets
        none — fail) operations whose lease has expired."""

    async def put_kind(self, kind: KindRecord) -> bool:
        """Register or update a kind (its ``updated_at`` is the store's clock); ``True``
        when it was new."""

    async def get_kind(self, name: str) -> KindRecord | None:
        """The stored kind, or ``None`` (its ``workers`` is not counted)."""

    async def list_kinds(self) -> list[KindRecord]:
        """Every stored kind by name, each with ``workers``: how many workers asked for it
        (``worker_seen``) whose lease period has not run out since."""

    async def worker_seen(self, worker: str, kinds: Sequence[str], lease_ms: int) -> None:
        """``worker`` asks for ``kinds``: count it as serving them for ``lease_ms``."""

    async def stage_result(self, lease: Lease, result: StoredResult) -> None:
        """Keep ``result`` for the ``succeeded`` outcome of ``lease``'s attempt (an HTTP
        worker's upload), replacing one it staged before; fenced like an append: a lease no
        longer held raises ``LeaseLost`` and writes nothing."""

    async def staged_result(self, lease: Lease) -> StoredResult | None:
        """The result ``lease``'s attempt staged, while that lease is still held; ``None``
        otherwise (a staged result of an attempt that lost its lease is never served, and
        ``sweep`` deletes it)."""

    async def sweep(self, retention: Retention, limit: int = 100) -> Swept:
        """One small, deterministic batch of retention work (at most ``limit`` of each kind):
        expire results (append ``OperationExpired``), compact histories to their terminal
        event and after (keeping a snapshot of the state before it), forget operations
        whose tombstone period is over (operation, events, result), forget idempotency keys.
        """

    async def history_start(self, operation_id: str) -> HistoryStart:
        """Where the kept history of the operation begins (see ``HistoryStart``)."""

    async def compacted_through(self) -> int:
        """The highest position ever removed by retention (0 if none): a store-wide cursor
        below it may have missed events, every event above it is still kept."""

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[Operation]:
        """Operations whose webhook delivery is due (``webhook_due_at`` has passed), at most
        ``limit``; each is held for ``lease_ms`` (its due time moves that far ahead) so that
        other processes do not deliver it at the same time."""
