"""The baseline: a bare Starlette + sse-starlette broadcast app, and a hello-world route.

Same frames as opstream (``id:``, ``event:``, ``data:`` with one JSON per event, encoded once),
no store, no replay, no merge: what the transport costs on its own.
"""

import asyncio
import time

import orjson
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

subscribers: set[asyncio.Queue[bytes]] = set()


async def stream(request):
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    subscribers.add(queue)

    async def frames():
        try:
            yield b"retry: 2000\n\n"
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    return EventSourceResponse(frames(), ping=15, send_timeout=30)


async def tick(count: int, rate: float, start_at: float, pad: str) -> None:
    await asyncio.sleep(max(0.0, start_at - time.time()))
    begin = asyncio.get_running_loop().time()
    for i in range(1, count + 1):
        delay = begin + (i - 1) / rate - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        data = orjson.dumps({"i": i, "t": time.time_ns(), "pad": pad})
        frame = b"id: %d\nevent: BenchTick\ndata: %s\n\n" % (i, data)
        for queue in subscribers:
            queue.put_nowait(frame)


async def start(request):
    q = request.query_params
    args = (int(q["count"]), float(q["rate"]), float(q["startAt"]), "x" * int(q.get("pad", 0)))
    request.app.state.ticker = asyncio.create_task(tick(*args))
    return PlainTextResponse("started", status_code=202)


async def hello(request):
    return PlainTextResponse("Hello, world!")


app = Starlette(
    routes=[Route("/stream", stream), Route("/start", start, methods=["POST"]), Route("/", hello)]
)
