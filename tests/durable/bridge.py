"""A test harness that lets the Durable Streams conformance suite reach opstream's read side.

The suite (``@durable-streams/server-conformance-tests``) sets up every test by writing:
``PUT /v1/stream/NAME`` creates a stream, ``POST`` appends, ``Stream-Closed: true`` closes.
opstream's streams are written by operations, never over HTTP, so this bridge plays the
writer: a stream is an operation of the kind ``conformance.stream`` (run by no worker), each
append one ``StreamAppended`` event carrying the payload, and closing it
``OperationSucceeded``, its terminal event.

Reads (``GET``, ``HEAD``) go, unchanged, to opstream's own
``GET /operations/{id}/events``: offsets, ``Stream-*`` headers, ETags, caching, long-poll,
SSE and closure are opstream's. The bridge only turns the event documents in a body back
into the bytes that were appended (and sets the stream's content type), which is all that
separates "the history of an operation" from "the stream the test wrote".

Run: ``OPSTREAM_DATABASE=sqlite:///x.db uvicorn tests.durable.bridge:app``.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from opstream.app.http.application import create_app
from opstream.app.http.durable import SECURITY_HEADERS
from opstream.app.http.operations import new_operation_id
from opstream.events.errors import OpstreamError
from opstream.events.model import NewEvent
from opstream.events.store import EventStore

PREFIX = "/v1/stream/"
KIND = "conformance.stream"
APPENDED = "StreamAppended"

inner = create_app()
# name -> (operation id, content type); a harness, so memory is where streams are named.
streams: dict[str, tuple[str, str]] = {}
closed_streams: set[str] = set()


def _store() -> EventStore:
    store: EventStore = inner.state.services.store
    return store


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def _is_text(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower().startswith("text/")


def _payload_event(content_type: str, body: bytes) -> NewEvent:
    if _is_json(content_type):
        value = orjson.loads(body)
        items = value if isinstance(value, list) else [value]
        return NewEvent(APPENDED, "appended", {"items": items})
    return NewEvent(APPENDED, "appended", {"b64": base64.b64encode(body).decode()})


def _check_json(content_type: str, body: bytes, *, allow_empty: bool) -> Response | None:
    if not _is_json(content_type) or not body:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Response("invalid JSON", 400)
    if value == [] and not allow_empty:
        return Response("empty JSON array", 400)
    return None


def _closed_header(request: Request) -> bool:
    return request.headers.get("stream-closed", "").lower() == "true"


async def _write(request: Request, name: str) -> Response:
    store = _store()
    body = await request.body()
    if request.method == "PUT":
        content_type = request.headers.get("content-type", "application/octet-stream")
        if name in streams:
            return Response(status_code=200, headers=await _tail_headers(name))
        bad = _check_json(content_type, body, allow_empty=True)
        if bad:
            return bad
        operation_id = new_operation_id()
        await store.create(operation_id, KIND, {"stream": name, "contentType": content_type})
        events = [NewEvent("OperationStarted", "started", {"attempt": 1})]
        if body and not (_is_json(content_type) and orjson.loads(body) == []):
            events.append(_payload_event(content_type, body))
        if _closed_header(request):
            events.append(NewEvent("OperationSucceeded", "closed", {}))
            closed_streams.add(name)
        await store.append(operation_id, events)
        streams[name] = (operation_id, content_type)
        location = str(request.url.replace(query=""))
        headers = {**await _tail_headers(name), "Location": location}
        return Response(status_code=201, headers=headers)
    if name not in streams:
        return Response(status_code=404)
    operation_id, content_type = streams[name]
    if request.method == "DELETE":
        del streams[name]
        return Response(status_code=204)
    # POST: append, close, or both.
    if name in closed_streams:
        return Response(status_code=409, headers={**await _tail_headers(name)})
    given = request.headers.get("content-type")
    if body and given and given.split(";")[0].lower() != content_type.split(";")[0].lower():
        return Response("content type mismatch", 409)
    if not body and not _closed_header(request):
        return Response("empty body", 400)
    bad = _check_json(content_type, body, allow_empty=False)
    if bad:
        return bad
    events = [_payload_event(content_type, body)] if body else []
    if _closed_header(request):
        events.append(NewEvent("OperationSucceeded", "closed", {}))
        closed_streams.add(name)
    await store.append(operation_id, events)
    return Response(status_code=204, headers=await _tail_headers(name))


async def _tail_headers(name: str) -> dict[str, str]:
    operation_id, content_type = streams[name]
    op = await _store().get(operation_id)
    headers = {"Stream-Next-Offset": f"{op.last_seq:016d}", "Content-Type": content_type}
    if name in closed_streams:
        headers["Stream-Closed"] = "true"
    return headers


def _payload(content_type: str, events: list[dict[str, Any]]) -> bytes:
    appended = [e for e in events if e.get("type") == APPENDED]
    if _is_json(content_type):
        return orjson.dumps([item for e in appended for item in e["details"]["items"]])
    return b"".join(base64.b64decode(e["details"]["b64"]) for e in appended)


def _sse_frame(content_type: str, frame: bytes) -> bytes:
    """One SSE frame of opstream's, as the conformance suite's stream would send it."""
    lines = frame.split(b"\n")
    if lines and lines[0] == b"event: data":
        data = b"\n".join(line[5:] for line in lines[1:] if line.startswith(b"data:"))
        events = orjson.loads(data)
        payload = _payload(content_type, events)
        if _is_json(content_type):
            return b"event: data\ndata:" + payload + b"\n\n"
        if not payload:
            return b""
        if _is_text(content_type):
            # Every line break a reader could see ends a data: line, so that a payload can
            # never smuggle in an event of its own.
            lines = re.split(rb"\r\n|\r|\n", payload)
            return b"event: data\n" + b"".join(b"data:%s\n" % line for line in lines) + b"\n"
        return b"event: data\ndata:" + base64.b64encode(payload) + b"\n\n"
    return frame + b"\n\n"


async def _read(scope: Scope, receive: Receive, send: Send, name: str) -> None:
    if scope["method"] == "OPTIONS":
        # A preflight names no stream that must exist: opstream's CORS layer answers it.
        operation_id = streams.get(name, ("op_preflight", ""))[0]
        await inner({**scope, "path": f"/operations/{operation_id}/events"}, receive, send)
        return
    if name not in streams:
        await Response(status_code=404, headers=SECURITY_HEADERS)(scope, receive, send)
        return
    operation_id, content_type = streams[name]
    inner_scope = {**scope, "path": f"/operations/{operation_id}/events", "raw_path": None}
    start: dict[str, Any] = {}
    body = bytearray()
    sse = False

    async def relay(message: Message) -> None:
        nonlocal sse
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]
            sse = any(
                k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                for k, v in headers
            )
            if not sse:
                headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
                start.update(message, headers=headers)
                return
            if not (_is_json(content_type) or _is_text(content_type)):
                headers.append((b"stream-sse-data-encoding", b"base64"))
            await send({**message, "headers": headers})
            return
        if sse:
            body.extend(message.get("body", b""))
            out = bytearray()
            while b"\n\n" in body:
                frame, _, rest = bytes(body).partition(b"\n\n")
                body[:] = rest
                out += _sse_frame(content_type, frame)
            await send({**message, "body": bytes(out)})
            return
        body.extend(message.get("body", b""))
        if message.get("more_body"):
            return
        status = start["status"]
        payload = bytes(body)
        headers = list(start["headers"])
        if status == 200 and scope["method"] == "GET":
            payload = _payload(content_type, orjson.loads(payload))
        if status in (200, 204, 304):
            headers.append((b"content-type", content_type.encode()))
        elif payload:
            headers.append((b"content-type", b"application/problem+json"))
        if scope["method"] != "HEAD":
            headers.append((b"content-length", str(len(payload)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    await inner(inner_scope, receive, relay)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope.get("path", "")
    if scope["type"] != "http" or not path.startswith(PREFIX):
        await inner(scope, receive, send)
        return
    name = path[len(PREFIX) :]
    if scope["method"] in ("GET", "HEAD", "OPTIONS"):  # OPTIONS: opstream's CORS preflight
        await _read(scope, receive, send, name)
        return
    request = Request(scope, receive)
    try:
        response = await _write(request, name)
    except (OpstreamError, orjson.JSONDecodeError) as exc:
        response = Response(str(exc), 400)
    response.headers.update(SECURITY_HEADERS)
    await response(scope, receive, send)
