"""The synchronous client: the asynchronous one, run on a private event loop thread.

One implementation of ``watch`` and ``wait`` is enough to get right; the blocking flavour
hands each call to that loop and blocks until it is answered. It works from any thread, and
from code that already runs an event loop of its own (a notebook). Ctrl-C while blocked
cancels the call on the loop before it propagates.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

from opstream.app.client.aio import AsyncClient, ClientOptions
from opstream.app.client.models import Operation, Result
from opstream.app.client.watch import LONG_POLL_SECONDS
from opstream.events.model import Event

T = TypeVar("T")

# How long a cancelled call may take to unwind on the loop before Ctrl-C propagates anyway.
CANCEL_GRACE = 5.0


class Client:
    """The blocking opstream client; the same methods and arguments as ``AsyncClient``.

    Use it as ``with Client() as client: ...`` or call ``close()``.
    """

    def __init__(self, url: str | None = None, **options: Unpack[ClientOptions]) -> None:
        # First, so that a wrong argument raises before a loop thread is started for nothing.
        self._async = AsyncClient(url, **options)
        self.url = self._async.url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="opstream-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._async.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CANCEL_GRACE)
            if not self._thread.is_alive():
                self._loop.close()

    def submit(
        self,
        kind: str,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        callback_url: str | None = None,
    ) -> Operation:
        """See ``AsyncClient.submit``."""
        return self._call(
            self._async.submit(kind, params, idempotency_key, callback_url=callback_url)
        )

    def get(self, operation_id: str) -> Operation:
        """See ``AsyncClient.get``."""
        return self._call(self._async.get(operation_id))

    def list(
        self, *, status: str | None = None, kind: str | None = None, limit: int | None = 50
    ) -> builtins.list[Operation]:
        """See ``AsyncClient.list``."""
        return self._call(self._async.list(status=status, kind=kind, limit=limit))

    def events(
        self, operation_id: str, after: int = 0, *, page_size: int | None = None
    ) -> Iterator[Event]:
        """See ``AsyncClient.events``."""
        return self._iterate(self._async.events(operation_id, after, page_size=page_size))

    def watch(self, operation_id: str, after: int = 0) -> Iterator[Event]:
        """See ``AsyncClient.watch``."""
        return self._iterate(self._async.watch(operation_id, after))

    def wait(
        self,
        operation_id: str,
        *,
        timeout: float | None = None,
        long_poll: int = LONG_POLL_SECONDS,
    ) -> Result:
        """See ``AsyncClient.wait``."""
        return self._call(self._async.wait(operation_id, timeout=timeout, long_poll=long_poll))

    def result(self, operation_id: str) -> Result:
        """See ``AsyncClient.result``."""
        return self._call(self._async.result(operation_id))

    def cancel(self, operation_id: str) -> Operation:
        """See ``AsyncClient.cancel``."""
        return self._call(self._async.cancel(operation_id))

    def delete(self, operation_id: str, *, if_seq: int | None = None) -> Operation | None:
        """See ``AsyncClient.delete``."""
        return self._call(self._async.delete(operation_id, if_seq=if_seq))

    def delete_result(self, operation_id: str, *, if_seq: int | None = None) -> None:
        """See ``AsyncClient.delete_result``."""
        self._call(self._async.delete_result(operation_id, if_seq=if_seq))

    def kinds(self) -> Any:
        """See ``AsyncClient.kinds``."""
        return self._call(self._async.kinds())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed and self._loop.is_closed():
            coro.close()
            raise RuntimeError("the opstream client is closed")
        unwound = threading.Event()

        async def guarded() -> T:
            try:
                return await coro
            finally:
                unwound.set()

        future = asyncio.run_coroutine_threadsafe(guarded(), self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (or another exception raised in this thread while blocked): stop the
            # call on the loop too, and give it a moment to close its connections.
            if future.cancel():
                unwound.wait(CANCEL_GRACE)
            raise

    def _iterate(self, generator: AsyncGenerator[T, None]) -> Iterator[T]:
        try:
            while True:
                try:
                    item = self._call(generator.__anext__())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # still unwinding after Ctrl-C
                    self._call(generator.aclose())
