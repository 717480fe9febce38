"""The server's side of the HTTP worker protocol: leases held by workers in other processes.

A worker in any language claims an operation over HTTP and writes one attempt of it
through its lease (DESIGN.md, "The HTTP worker protocol"). Everything here stands on the
store's own machinery — ``claim``, ``renew``, ``append`` fenced by a ``Lease`` — so an
HTTP worker is held to exactly the rules of an in-process one: a write on a lease that is
no longer held is refused (``LeaseLost``) in the write transaction, and writes nothing.

The lease id is the capability: ``<operation id>.<attempt>.<secret>``. The store keeps as
the lease's owner only a digest of the secret and the worker's tenant, so the id can be
checked by any API server without a lookup (several servers on one PostgreSQL), a reader
of the database cannot forge it, and a worker of another tenant presenting it holds
nothing. The HTTP layer (``opstream.app.http.leases``) parses and authenticates; this
module decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from opstream.app.runtime.catalog import KindCatalog
from opstream.events import model as m
from opstream.events.errors import (
    InvalidTransition,
    LeaseLost,
    OperationNotFound,
    OpstreamError,
    SequenceConflict,
)
from opstream.events.fold import CANCELLING, RUNNING, Operation
from opstream.events.hub import Hub
from opstream.events.policy import failure_events
from opstream.events.store import EventStore, Lease, StoredResult

log = logging.getLogger(__name__)

LEASE_ID = re.compile(r"^(op_[0-9A-Z]{26})\.([1-9][0-9]{0,8})\.([A-Za-z0-9_-]{32})$")
# A claim that found nothing looks again this often even without a wake-up (a wake-up
# from another process can come late; it is never needed for correctness).
CLAIM_POLL_SECONDS = 1.0
# Remembered lease periods of leases that never finished (their worker died) are dropped
# after this long.
FORGET_AFTER_SECONDS = 3600.0
WAKING_TYPES = frozenset({m.OPERATION_QUEUED, m.OPERATION_RETRIED})


def owner_of(tenant: str, secret: str) -> str:
    """The lease owner the store keeps for a lease id's secret, bound to the tenant."""
    digest = hashlib.sha256(f"opstream-lease\n{tenant}\n{secret}".encode()).hexdigest()
    return f"http:{digest[:40]}"


def parse_lease(lease_id: str, tenant: str) -> Lease:
    """The store's ``Lease`` that ``lease_id`` stands for, for a worker of ``tenant``.
    A malformed id was never a lease: ``LeaseLost`` as for one no longer held."""
    match = LEASE_ID.match(lease_id)
    if match is None:
        raise LeaseLost("no such lease")
    operation_id, attempt, secret = match.groups()
    return Lease(operation_id, owner_of(tenant, secret), int(attempt))


CLAIMS = Counter(
    "opstream_http_claims", "HTTP workers' claims (POST /leases), by outcome", ["outcome"]
)
LEASE_REFUSED = Counter(
    "opstream_http_lease_refused",
    "Calls of HTTP workers on a lease no longer held (409 lease-lost): nothing written",
)
for _outcome in ("claimed", "none"):
    CLAIMS.labels(_outcome)


@contextlib.contextmanager
def held(lease: Lease) -> Iterator[None]:
    """A lease on an operation that does not exist (never did, or was forgotten) is a
    lease not held, as for any other: ``LeaseLost``, never ``404``. Refusals are counted."""
    try:
        yield
    except OperationNotFound:
        LEASE_REFUSED.inc()
        raise LeaseLost(f"operation {lease.operation_id}: no such lease") from None
    except LeaseLost:
        LEASE_REFUSED.inc()
        raise


@dataclass(frozen=True)
class Claimed:
    """A lease an HTTP worker took: its id, when it runs out (ms), and the operation."""

    lease_id: str
    expires_at: int
    operation: Operation


@dataclass(frozen=True)
class Held:
    """A lease after a report or a renewal: the operation as it now stands."""

    operation: Operation
    expires_at: int | None = None

    @property
    def cancel_requested(self) -> bool:
        return self.operation.status == CANCELLING


@dataclass(frozen=True)
class Failure:
    """A failed outcome: the error as clients will see it, and whether to try again."""

    type: str
    message: str
    retry: bool = False


class WorkSignal:
    """Wakes claims that wait for work when operations of their kinds are queued.

    One subscription to the hub's feed serves every waiting claim of the process (a
    subscription per idle worker would receive every event of the store)."""

    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        self._waiters: list[tuple[frozenset[str], asyncio.Future[None]]] = []

    async def run(self, hub: Hub) -> None:
        with hub.subscribe(None) as feed:
            while not feed.closed:
                arrived, overflowed = await feed.next()
                kinds = {e.kind for e in arrived if e.type in WAKING_TYPES}
                if overflowed or kinds:
                    self._wake(None if overflowed else kinds)
        self.closed = True
        self._wake(None)

    def _wake(self, kinds: set[str] | None) -> None:
        self.version += 1
        waiting = []
        for wanted, future in self._waiters:
            if kinds is None or wanted & kinds:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((wanted, future))
        self._waiters = waiting

    async def wait(self, kinds: frozenset[str], since: int, max_wait: float) -> None:
        """Until work of ``kinds`` may have arrived after ``version`` was ``since``, or
        ``max_wait`` seconds."""
        if self.version != since or self.closed:
            return
        future = asyncio.get_running_loop().create_future()
        entry = (kinds, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(max_wait):
                await future
        except TimeoutError:
            pass
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)


class LeaseDesk:
    """Claims, reports, renewals, results and outcomes of HTTP workers' leases."""

    def __init__(self, store: EventStore, catalog: KindCatalog, *, default_lease_ms: int) -> None:
        self.store = store
        self.catalog = catalog
        self.default_lease_ms = default_lease_ms
        self.signal = WorkSignal()
        # Per process: each lease's period, so that a renewal without ``leaseMs`` (and the
        # result upload) renews for as long as the worker last asked; a call that reaches
        # another server renews for the default period instead. Uploaded results are kept
        # in the store (``EventStore.stage_result``), where every server finds them.
        self._periods: dict[str, tuple[float, int]] = {}
        self._seen_until: dict[tuple[str, tuple[str, ...]], float] = {}

    async def claim(
        self,
        tenant: str,
        worker: str,
        kinds: Sequence[str],
        lease_ms: int,
        wait: float,
        gone: Callable[[], Awaitable[bool]],
    ) -> Claimed | None:
        """The oldest queued operation of ``kinds`` (of ``tenant``), under a new lease;
        ``None`` when none came within ``wait`` seconds, or the asker is ``gone`` (its
        connection closed: a lease taken for nobody would cost the operation an attempt).
        While it waits, ``worker`` counts as serving ``kinds`` (``GET /kinds``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        wanted = frozenset(kinds)
        while True:
            if await gone():
                return None
            await self._seen(worker, kinds, lease_ms)
            since = self.signal.version
            secret = secrets.token_urlsafe(24)
            taken_at = m.now_ms()
            appended = await self.store.claim(
                owner_of(tenant, secret), kinds, lease_ms, tenant=tenant
            )
            if appended is not None:
                CLAIMS.labels("claimed").inc()
                operation = appended.operation
                lease_id = f"{operation.id}.{operation.attempt}.{secret}"
                self._remember(lease_id, lease_ms)
                return Claimed(lease_id, taken_at + lease_ms, operation)
            remaining = deadline - loop.time()
            if remaining <= 0 or self.signal.closed:
                CLAIMS.labels("none").inc()
                return None
            await self.signal.wait(wanted, since, min(remaining, CLAIM_POLL_SECONDS))

    async def _seen(self, worker: str, kinds: Sequence[str], lease_ms: int) -> None:
        """Count ``worker`` as serving ``kinds``: written at most every third of the period
        it counts for (a worker claims far more often than that, and each is a write)."""
        now = time.monotonic()
        key = (worker, tuple(sorted(kinds)))
        if self._seen_until.get(key, 0.0) > now:
            return
        if len(self._seen_until) > 10_000:  # a bound, however many workers come and go
            self._seen_until.clear()
        self._seen_until[key] = now + lease_ms / 3000
        try:
            await self.store.worker_seen(worker, kinds, lease_ms)
        except OpstreamError as exc:  # a count, not worth refusing a claim for
            log.warning("could not count worker %s: %s", worker, exc)

    async def report(
        self, lease: Lease, events: Sequence[m.NewEvent], expected_seq: int | None
    ) -> Held:
        """Append ``events`` atomically, in order, fenced by the lease (and conditional on
        ``expected_seq`` when given)."""
        with held(lease):
            appended = await self.store.append(
                lease.operation_id, events, expected_seq=expected_seq, lease=lease
            )
        return Held(appended.operation)

    async def renew(self, lease_id: str, lease: Lease, lease_ms: int | None) -> Held:
        """Extend the lease by ``lease_ms`` (the period it was last given, by default)."""
        period = self._period(lease_id) if lease_ms is None else lease_ms
        taken_at = m.now_ms()
        with held(lease):
            operation = await self.store.renew(lease, period)
        self._remember(lease_id, period)
        return Held(operation, taken_at + period)

    async def stage_result(self, lease_id: str, lease: Lease, result: StoredResult) -> None:
        """Keep ``result`` for this lease's ``succeeded`` outcome; the lease must be held
        (checked by renewing it for its period, and again by the store as it writes: a
        lease lost in between writes nothing). Kept in the store, so that the outcome may
        reach any API server, or this one after a restart."""
        await self.renew(lease_id, lease, None)
        with held(lease):
            await self.store.stage_result(lease, result)

    async def succeed(self, lease_id: str, lease: Lease, result: StoredResult | None) -> Operation:
        """``OperationSucceeded`` with ``result``, or with the staged one (JSON ``null``
        when there is neither, as a Python handler that returns nothing)."""
        if result is None:
            # Read while the lease is held; the append below is fenced by the same lease,
            # so what it stores is the upload of this attempt (the sweeper then deletes the
            # staged copy: its attempt no longer holds a lease).
            with held(lease):
                staged = await self.store.staged_result(lease)
            result = staged or StoredResult("application/json", b"null")
        details = {"contentType": result.content_type, "size": len(result.body)}
        event = m.NewEvent(m.OPERATION_SUCCEEDED, "succeeded", details)
        with held(lease):
            appended = await self.store.append(
                lease.operation_id, [event], lease=lease, result=result
            )
        self._drop(lease_id)
        return appended.operation

    async def fail(self, lease_id: str, lease: Lease, failure: Failure) -> Operation:
        """``OperationFailed`` — or, when the worker says the failure is worth retrying and
        the kind's policy leaves attempts, ``OperationRetried`` after the policy's backoff
        (``events.policy``: the rules every worker follows)."""
        policy = await self.catalog.policy((await self._operation(lease)).kind)

        def events(operation: Operation) -> list[m.NewEvent]:
            retry = failure.retry and operation.status == RUNNING  # a cancel wins over a retry
            return failure_events(
                operation, failure.type, failure.message, retry=retry, policy=policy
            )

        return await self._settle(lease_id, lease, events)

    async def _operation(self, lease: Lease) -> Operation:
        with held(lease):
            return await self.store.get(lease.operation_id)

    async def cancelled(self, lease_id: str, lease: Lease) -> Operation:
        event = m.NewEvent(m.OPERATION_CANCELLED, "cancelled")
        return await self._settle(lease_id, lease, lambda _: [event])

    async def hand_back(self, lease_id: str, lease: Lease) -> Operation:
        """Give the operation back without spending an attempt (a worker shutting down);
        one whose cancel was asked for is cancelled instead, as recovery would."""

        def events(operation: Operation) -> list[m.NewEvent]:
            if operation.status == CANCELLING:
                return [m.NewEvent(m.OPERATION_CANCELLED, "cancelled: its worker handed it back")]
            message = "handed back: its worker let it go"
            return [m.NewEvent(m.OPERATION_RETRIED, message, {"handedBack": True})]

        return await self._settle(lease_id, lease, events)

    async def _settle(
        self, lease_id: str, lease: Lease, decide: Callable[[Operation], list[m.NewEvent]]
    ) -> Operation:
        """Append what ``decide`` makes of the operation as it stands. A cancel request that
        lands between the read and the append makes the fold refuse a retry: decide again."""
        for _ in range(3):
            operation = await self._operation(lease)
            try:
                with held(lease):
                    appended = await self.store.append(
                        lease.operation_id,
                        decide(operation),
                        expected_seq=operation.last_seq,
                        lease=lease,
                    )
            except (InvalidTransition, SequenceConflict):
                continue
            self._drop(lease_id)
            return appended.operation
        raise InvalidTransition(f"operation {lease.operation_id} kept changing; try again")

    def _remember(self, lease_id: str, lease_ms: int) -> None:
        self._forget_stale()
        self._periods[lease_id] = (time.monotonic(), lease_ms)

    def _period(self, lease_id: str) -> int:
        found = self._periods.get(lease_id)
        return found[1] if found else self.default_lease_ms

    def _drop(self, lease_id: str) -> None:
        self._periods.pop(lease_id, None)

    def _forget_stale(self) -> None:
        cutoff = time.monotonic() - FORGET_AFTER_SECONDS
        table = self._periods
        if table and next(iter(table.values()))[0] < cutoff:  # oldest first (insertion)
            for key in [k for k, (at, _) in table.items() if at < cutoff]:
                del table[key]


async def recover_forever(store: EventStore, lease_ms: int, max_attempts: int) -> None:
    """Retry (or fail) operations whose worker stopped renewing its lease. In-process
    workers do this themselves; a server that runs none (``--concurrency 0``) and serves
    HTTP workers runs this instead, or a dead HTTP worker's operation would wait forever."""
    interval = max(0.2, lease_ms / 2000)
    while True:
        try:
            for event in await store.recover(max_attempts):
                log.info("%s %s: %s", event.operation_id, event.type, event.message)
        except OpstreamError as exc:
            log.warning("recovery failed: %s", exc)
        await asyncio.sleep(interval)
