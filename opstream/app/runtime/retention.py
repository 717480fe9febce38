"""The retention sweeper: results, histories, tombstones and idempotency keys expire.

Deterministic and bounded: every ``sweep_seconds`` it asks the store for small batches until
there is nothing left to do, so the store's size stays bounded by rate times period.
"""

from __future__ import annotations

import asyncio
import logging

from opstream.app.runtime.settings import Settings
from opstream.events.errors import OpstreamError
from opstream.events.store import EventStore, Retention

log = logging.getLogger(__name__)
BATCH = 100


def retention_of(settings: Settings) -> Retention:
    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    return Retention(
        result_ms=ms(settings.result_ttl_seconds),
        history_ms=ms(settings.history_ttl_seconds),
        tombstone_ms=ms(settings.tombstone_ttl_seconds),
        idempotency_ms=ms(settings.idempotency_ttl_seconds),
    )


async def sweep_forever(store: EventStore, settings: Settings) -> None:
    retention = retention_of(settings)
    while True:
        try:
            while (swept := await store.sweep(retention, BATCH)).anything:
                log.info(
                    "retention: %d expired, %d compacted, %d forgotten, %d keys",
                    len(swept.events),
                    swept.compacted,
                    swept.forgotten,
                    swept.keys,
                )
                await asyncio.sleep(0)  # let requests through between batches
        except OpstreamError as exc:
            log.warning("retention sweep failed: %s", exc)
        await asyncio.sleep(settings.sweep_seconds)
