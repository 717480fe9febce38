"""A FastAPI application with opstream mounted under /lro (docs/embedding.md).

Run it with ``uvicorn fastapi_app:app --app-dir docs/examples``; tests/e2e/test_embedding.py
runs this file in a real server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from opstream.app.http.application import create_app

# Settings come from the OPSTREAM_* environment variables (database, tokens, handlers, ...),
# as for `opstream serve`; pass create_app(Settings(...)) to set them in code instead.
operations = create_app()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A mounted app's lifespan is not run by its host: run opstream's from the host's.
    # It opens the database and starts the workers before the first request, and hands
    # running operations back when the server stops.
    async with operations.router.lifespan_context(operations):
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/lro", operations)


@app.get("/hello")
async def hello() -> dict[str, str]:
    """The host's own routes live beside opstream's."""
    return {"hello": "world"}
