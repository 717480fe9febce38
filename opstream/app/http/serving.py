"""uvicorn's server, with a deadline of our own on its listening sockets.

A stream whose client stopped reading ends within two heartbeats (its keep-alive's send
deadline), but uvicorn then closes its connection gracefully, and a graceful close waits for
the client to take what is still buffered: one that keeps its receive window shut would
hold the socket (and megabytes of buffer) for good, no longer counted as a stream.
``TCP_USER_TIMEOUT`` (Linux; accepted connections inherit it from the listening socket)
makes the kernel abort such a connection, and one whose client vanished, instead.
"""

from __future__ import annotations

import socket

import uvicorn


class Server(uvicorn.Server):
    """``uvicorn.Server`` whose connections are dropped once their client has taken no data
    for ``send_timeout`` seconds (where the platform can say so; elsewhere as uvicorn's)."""

    def __init__(self, config: uvicorn.Config, *, send_timeout: float) -> None:
        super().__init__(config)
        self.send_timeout = send_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for listener in server.sockets:
                give_up_sending_after(listener, self.send_timeout)


def give_up_sending_after(listener: socket.socket, seconds: float) -> None:
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None and listener.family in (socket.AF_INET, socket.AF_INET6):
        listener.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))
