"""A client that stops reading its stream is let go: the stream ends and its slot is freed."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server

from ..requirements import program
from .helpers import countdown, wait_terminal

pytestmark = pytest.mark.e2e

HEARTBEAT = 0.2  # a stalled stream is closed within two of these


def _open_streams(client: httpx.Client) -> int:
    match = re.search(r"^opstream_open_streams (\S+)$", client.get("/metrics").text, re.M)
    assert match, "the metrics name the open streams"
    return int(float(match.group(1)))


def _stall(client: httpx.Client, reader: socket.socket, port: int) -> str:
    """Open the stream of a history far bigger than the socket buffers between the server
    and ``reader``, which asks for a tiny receive window and then reads nothing."""
    operation_id = countdown(client, 10_000, 0)
    wait_terminal(client, operation_id)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", port))
    reader.sendall(
        f"GET /operations/{operation_id}/events/stream HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    assert reader.recv(64).startswith(b"HTTP/1.1 200")
    return operation_id


def test_a_stream_whose_client_stopped_reading_is_closed(tmp_path: Path) -> None:
    server = start_server(tmp_path, OPSTREAM_HEARTBEAT_SECONDS=str(HEARTBEAT))
    reader = socket.socket()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            operation_id = _stall(client, reader, server.port)
            deadline = time.monotonic() + 10
            while _open_streams(client) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _open_streams(client) == 0, "the stalled stream was not let go"
            assert "the client stopped reading; stream closed" in server.log()
            # The server goes on serving everyone else.
            assert client.get(f"/operations/{operation_id}").json()["status"] == "succeeded"
    finally:
        reader.close()
        server.stop()
    assert "Traceback" not in server.log()


def _server_side(port: int, client_port: int) -> str:
    """The server's end of the connection from ``client_port``, as ``ss`` lists it."""
    listed = subprocess.run(
        ["ss", "-Htn", "state", "all", f"( sport = :{port} and dport = :{client_port} )"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return listed.stdout.strip()


def test_the_connection_of_a_client_that_stopped_reading_is_dropped_too(tmp_path: Path) -> None:
    """Freeing the stream is not enough: a graceful close waits for the client to take what
    is buffered, so a client keeping its window shut would hold the socket for good."""
    program("ss", "iproute2")  # it sees the sockets; skips, or fails under CI, without it
    server = start_server(tmp_path, OPSTREAM_HEARTBEAT_SECONDS=str(HEARTBEAT))
    reader = socket.socket()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            _stall(client, reader, server.port)
            client_port = reader.getsockname()[1]
            assert _server_side(server.port, client_port), "the connection is open at first"
            deadline = time.monotonic() + 10
            while _server_side(server.port, client_port) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _server_side(server.port, client_port), "the server still holds it"
            assert _open_streams(client) == 0
    finally:
        reader.close()
        server.stop()
