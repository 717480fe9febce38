"""The OpenAPI description of the Durable Streams side of ``/operations/{id}/events``.

Kept beside ``durable`` (and merged into ``openapi`` with one call) so that the protocol's
parameters, headers and answers are described where they are implemented.
"""

from __future__ import annotations

from typing import Any

from opstream.app.http.openapi_conventions import PROBLEM, operation

TAG = "events"


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


STREAM_HEADERS = {
    "Stream-Next-Offset": _header("the offset to read from next"),
    "Stream-Up-To-Date": _header("true: this answer reaches the current end of the stream"),
    "Stream-Cursor": _header("echo it as cursor= on the next long-poll (cache collapsing)"),
    "Stream-Closed": _header("true: the stream ended at the terminal event; nothing follows"),
    "ETag": _header('"{operationId}:{startOffset}:{endOffset}[:c]"'),
    "Cache-Control": _header("immutable pages long, the tail no-cache, now-answers no-store"),
}

PARAMETERS = [
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "Durable Streams offset: -1 (the start), now (the tail), or a "
        "Stream-Next-Offset this server handed out",
    },
    {
        "name": "live",
        "in": "query",
        "required": False,
        "schema": {"enum": ["long-poll", "sse"]},
        "description": "wait for new events (long-poll) or stream them (sse); needs offset",
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "the Stream-Cursor of the previous answer",
    },
]

RESPONSES: dict[str, Any] = {
    "204": {
        "description": "long-poll: nothing new before the timeout, or the stream is closed",
        "headers": STREAM_HEADERS,
    },
    "304": {"description": "the If-None-Match ETag still holds", "headers": STREAM_HEADERS},
    "410": PROBLEM,
    # live=sse counts against the tenant's open streams (OPSTREAM_MAX_STREAMS).
    "429": {"$ref": "#/components/responses/TooManyRequests"},
}


def with_durable_streams(path_item: dict[str, Any]) -> dict[str, Any]:
    """``path_item`` (the events resource) with the Durable Streams parameters, answers and
    a ``HEAD`` for the stream's metadata."""
    get = dict(path_item["get"])
    get["parameters"] = [*get.get("parameters", []), *PARAMETERS]
    ok = dict(get["responses"]["200"])
    ok["headers"] = {**ok.get("headers", {}), **STREAM_HEADERS}
    ok["content"] = {
        **ok["content"],
        "text/event-stream": {"schema": {"type": "string"}},
    }
    get["responses"] = {**get["responses"], "200": ok, **RESPONSES}
    head = operation(
        "headOperationEvents",
        TAG,
        "The Durable Stream's tail offset and whether it is closed (no body)",
        {
            "200": {"description": "the stream's metadata", "headers": STREAM_HEADERS},
            "404": PROBLEM,
            "410": PROBLEM,
        },
        stream_token=True,
    )
    return {**path_item, "get": get, "head": head}
