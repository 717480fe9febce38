"""``opstream worker --url``: Python handlers run over the HTTP worker protocol.

The worker host needs HTTP access to an opstream server and nothing else — no database.
Each of ``concurrency`` slots long-polls ``POST /leases`` for work, runs the kind's handler
with the same ``Context`` an in-process worker gives it, renews the lease (which also
carries ``cancelRequested``), and posts the outcome. The context's reports travel as
``POST /leases/{id}/events``: the context already writes one batch at a time carrying
everything reported since the last, so a handler that reports fast sends few requests.
Each batch carries ``expectedSeq``: a batch resent after a lost answer is never written
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import orjson

from opstream.app.runtime.context import Context, one_line
from opstream.app.runtime.kinds import Kind, Registry, Retryable, to_stored_result
from opstream.app.runtime.sync_context import SyncContext
from opstream.events import model as m
from opstream.events.errors import LeaseLost, OpstreamError, SequenceConflict, StoreError
from opstream.events.store import EventStore, Lease

log = logging.getLogger(__name__)

CLAIM_WAIT_SECONDS = 20.0
# How often a request that failed in transit (the server restarting, a network blip) is
# sent again before the attempt gives up on it.
SEND_ATTEMPTS = 5
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0


class WorkerRefused(Exception):
    """The server refuses this worker's credentials: no point in asking again."""


class LeaseChannel:
    """What a handler's ``Context`` writes through instead of a store: the lease's
    ``/events`` resource. Only ``append`` is ever called by the context."""

    def __init__(
        self, http: httpx.AsyncClient, lease_id: str, last_seq: int, on_cancel: Callable[[], None]
    ) -> None:
        self.http = http
        self.lease_id = lease_id
        self.last_seq = last_seq
        self.on_cancel = on_cancel

    async def append(self, operation_id: str, events: Sequence[m.NewEvent], **_: Any) -> None:
        body = {
            "events": [
                {"type": e.type, "message": e.message, "details": e.details} for e in events
            ],
            "expectedSeq": self.last_seq,
        }
        response = await send(
            self.http,
            "POST",
            f"/leases/{self.lease_id}/events",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code == 409:
            problem = response.json()
            if problem.get("type", "").endswith(":seq-conflict"):
                actual = int(problem.get("lastEventSeq", -1))
                if actual == self.last_seq + len(events):  # our own batch, its answer lost
                    self.last_seq = actual
                    return
                raise SequenceConflict(operation_id, self.last_seq, actual)
            raise LeaseLost(problem.get("detail", "the lease is no longer held"))
        if response.status_code != 200:
            raise StoreError(f"reporting events: {response.status_code} {response.text[:200]}")
        answer = response.json()
        self.last_seq = int(answer["lastEventSeq"])
        if answer.get("cancelRequested"):
            self.on_cancel()


async def send(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The server's answer, sending again while the request fails in transit or the
    server answers ``503`` (restarting); ``StoreError`` when it keeps failing."""
    delay = BACKOFF_SECONDS
    for attempt in range(SEND_ATTEMPTS):
        try:
            response = await http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            failure = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code in (401, 403):
                raise WorkerRefused(f"{response.status_code}: {response.text[:300]}")
            if response.status_code != 503:
                return response
            failure = "503 from the server"
        if attempt + 1 < SEND_ATTEMPTS:
            log.info("%s %s failed (%s); sending again", method, path, failure)
            await asyncio.sleep(delay)
            delay = min(MAX_BACKOFF_SECONDS, delay * 2)
    raise StoreError(f"{method} {path}: {failure}")


class RemoteWorker:
    """Claims and runs operations of the registered kinds from an opstream server."""

    def __init__(
        self,
        url: str,
        registry: Registry,
        *,
        token: str = "",
        concurrency: int = 4,
        lease_seconds: float = 15.0,
        name: str = "",
        claim_wait: float = CLAIM_WAIT_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        self.registry = registry
        self.token = token
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.name = name or f"{socket.gethostname()}-python"
        self.claim_wait = claim_wait
        self.running: dict[str, asyncio.Task[None]] = {}
        # ``def`` handlers run here, never on the loop (as in-process: runtime/worker.py).
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="opstream-handler")

    async def register_kinds(self, http: httpx.AsyncClient) -> None:
        """Put this worker's kinds in the server's registry (``PUT /kinds/{name}``): their
        schema and policy are the code's, and any API server then accepts them."""
        for kind in self.registry:
            record = kind.record().to_dict()
            body = {k: record[k] for k in ("description", "paramsSchema")}
            body.update({k: record[k] for k in ("timeoutSeconds", "maxAttempts") if record[k]})
            response = await send(http, "PUT", f"/kinds/{kind.name}", json=body)
            if response.status_code not in (200, 201):
                log.warning(
                    "registering %s: %s %s", kind.name, response.status_code, response.text[:300]
                )

    async def _register_until_done(self, http: httpx.AsyncClient) -> None:
        """Register the kinds, waiting for the server as long as it takes (a worker may
        start before the server it serves); only refused credentials end it."""
        delay = BACKOFF_SECONDS
        while True:
            try:
                await self.register_kinds(http)
                return
            except StoreError as exc:
                log.warning("%s is not answering (%s); trying again", self.url, exc)
                await asyncio.sleep(delay)
                delay = min(MAX_BACKOFF_SECONDS, delay * 2)

    async def run(self) -> None:
        """Claim and run operations until cancelled; then hand back what is running.
        Raises ``WorkerRefused`` when the server refuses the credentials."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = httpx.Timeout(30.0, read=self.claim_wait + 30.0)
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout) as http:
            await self._register_until_done(http)
            log.info("worker %s on %s, kinds: %s", self.name, self.url, self.registry.names())
            slots = [
                asyncio.create_task(self._slot(http), name=f"opstream-remote-slot-{i}")
                for i in range(self.concurrency)
            ]
            try:
                done, _ = await asyncio.wait(slots, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in slots:
                    task.cancel()
                await asyncio.gather(*slots, return_exceptions=True)
                self._threads.shutdown(wait=False, cancel_futures=True)

    async def _slot(self, http: httpx.AsyncClient) -> None:
        delay = BACKOFF_SECONDS
        while True:
            try:
                claimed = await self._claim(http)
            except (httpx.TransportError, StoreError) as exc:
                log.warning("claiming from %s failed: %s", self.url, exc)
                await asyncio.sleep(delay)
                delay = min(MAX_BACKOFF_SECONDS, delay * 2)
                continue
            delay = BACKOFF_SECONDS
            if claimed is not None:
                task = asyncio.create_task(self._execute(http, claimed))
                lease_id = claimed["lease"]["id"]
                self.running[lease_id] = task
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    task.cancel()  # hands the operation back
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    raise
                finally:
                    self.running.pop(lease_id, None)

    async def _claim(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        body = {
            "kinds": self.registry.names(),
            "worker": self.name,
            "leaseSeconds": self.lease_seconds,
            "wait": self.claim_wait,
        }
        response = await http.post("/leases", json=body)
        if response.status_code in (401, 403):
            raise WorkerRefused(f"{response.status_code}: {response.text[:300]}")
        if response.status_code == 204:
            return None
        if response.status_code != 201:
            raise StoreError(f"claim: {response.status_code} {response.text[:300]}")
        claimed: dict[str, Any] = response.json()
        return claimed

    async def _execute(self, http: httpx.AsyncClient, claimed: dict[str, Any]) -> None:
        lease_id: str = claimed["lease"]["id"]
        operation: dict[str, Any] = claimed["operation"]
        kind = self.registry.get(operation["kind"])
        if kind is None:  # we claimed only our kinds; a safety net all the same
            await self._outcome(http, lease_id, _failed("UnknownKind", operation["kind"]))
            return
        handler: asyncio.Task[Any] | None = None

        def cancel_requested() -> None:
            ctx.cancelled = True
            if handler is not None:
                handler.cancel()

        channel = LeaseChannel(http, lease_id, int(operation["lastEventSeq"]), cancel_requested)
        lease = Lease(operation["id"], lease_id, int(claimed["lease"]["attempt"]))
        # The context writes through the channel (its ``append`` is all a context uses).
        store = cast(EventStore, channel)
        ctx = Context(store, lease, kind=kind.name, params=operation["params"])
        handler = asyncio.ensure_future(self._call(kind, ctx, operation["params"]))
        guard = asyncio.create_task(self._guard(http, lease_id, ctx, handler))
        try:
            outcome = await self._run(ctx, handler)
        except asyncio.CancelledError:
            # This worker is shutting down: hand the operation back rather than leave it
            # to wait for its lease to run out.
            handler.cancel()
            with contextlib.suppress(Exception):
                await send(http, "DELETE", f"/leases/{lease_id}")
            raise
        finally:
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard
        if outcome is None:
            log.info("%s: lease lost; another worker speaks for it now", operation["id"])
            return
        try:
            await ctx.flush()  # every report before the end
        except LeaseLost:
            log.info("%s: lease lost before its outcome", operation["id"])
            return
        except OpstreamError as exc:
            log.warning("%s: reports failed: %s", operation["id"], exc)
            return
        await self._outcome(http, lease_id, outcome)

    async def _call(self, kind: Kind, ctx: Context, params: dict[str, Any]) -> Any:
        """The handler's call: on the loop for ``async def``, else in a thread with the
        context's ``def`` face."""
        if kind.is_async:
            return await kind.handler(ctx, params)
        loop = asyncio.get_running_loop()
        face = SyncContext(ctx, loop)
        call = functools.partial(kind.handler, face, params)
        try:
            return await loop.run_in_executor(
                self._threads, functools.partial(contextvars.copy_context().run, call)
            )
        finally:
            face.stopped = True  # whatever ended the attempt, the thread's reports now fail

    async def _run(self, ctx: Context, handler: asyncio.Task[Any]) -> Outcome | None:
        """How the handler ended, as the outcome to post; ``None`` when the lease was lost
        and someone else now speaks for the operation."""
        try:
            value = await handler
        except asyncio.CancelledError:
            if ctx.cancelled:
                return Outcome(b'{"status":"cancelled"}')
            if ctx.lease_lost:
                return None
            raise
        except LeaseLost:
            return None
        except Retryable as exc:  # the server applies the kind's attempts and backoff
            return _failed(exc.error_type, str(exc) or exc.error_type, retry=True)
        except Exception as exc:
            return _failed("HandlerError", str(exc) or type(exc).__name__)
        try:
            result = to_stored_result(value)
        except TypeError as exc:
            return _failed("ResultNotSerializable", str(exc))
        if result.content_type == "application/json":
            return Outcome(b'{"status":"succeeded","result":' + result.body + b"}")
        return Outcome(b'{"status":"succeeded"}', result.body, result.content_type)

    async def _outcome(self, http: httpx.AsyncClient, lease_id: str, outcome: Outcome) -> None:
        base = f"/leases/{lease_id}"
        json_type = {"Content-Type": "application/json"}
        try:
            if outcome.result is not None:
                headers = {"Content-Type": outcome.content_type}
                put = await send(
                    http, "PUT", f"{base}/result", content=outcome.result, headers=headers
                )
                if put.status_code != 204:
                    log.warning("%s: result refused: %s", lease_id, put.text[:300])
                    if put.status_code == 409:
                        return
                    outcome = _failed("ResultRefused", put.text[:300])
            response = await send(
                http, "POST", f"{base}/outcome", content=outcome.body, headers=json_type
            )
        except (StoreError, WorkerRefused) as exc:
            log.warning("%s: could not post the outcome: %s", lease_id, exc)
            return
        if response.status_code == 409:
            log.info("%s: lease lost before the outcome", lease_id.split(".")[0])
        elif response.status_code != 200:
            log.warning("%s: outcome refused: %s", lease_id, response.text[:300])

    async def _guard(
        self, http: httpx.AsyncClient, lease_id: str, ctx: Context, handler: asyncio.Task[Any]
    ) -> None:
        """Renew the lease a third of its period at a time; stop the handler when a cancel
        is asked for or the lease is lost."""
        body = {"leaseSeconds": self.lease_seconds}
        while not handler.done():
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                response = await http.put(f"/leases/{lease_id}", json=body)
            except httpx.TransportError as exc:
                log.warning("%s: renewal failed: %s", lease_id.split(".")[0], exc)
                continue
            if response.status_code == 409:
                log.warning("%s: lease lost, stopping its handler", lease_id.split(".")[0])
                ctx.lease_lost = True
                handler.cancel()
                return
            if response.status_code == 200 and response.json().get("cancelRequested"):
                ctx.cancelled = True
                handler.cancel()
                return


class Outcome:
    """The body of ``POST /leases/{id}/outcome``, and result bytes to upload before it."""

    def __init__(self, body: bytes, result: bytes | None = None, content_type: str = "") -> None:
        self.body = body
        self.result = result
        self.content_type = content_type


def _failed(error_type: str, message: str, *, retry: bool = False) -> Outcome:
    error = {"type": error_type, "message": one_line(message)}
    return Outcome(orjson.dumps({"status": "failed", "error": error, "retry": retry}))
