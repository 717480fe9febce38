"""The OpenAPI 3.1 description of the HTTP API (``GET /openapi.json``).

Written out rather than generated: it is part of the contract. Tests check that every route
of the application appears here and nothing else, that every operation has a unique
``operationId`` and a tag, and schemathesis checks the server against it. How to describe
an operation (the responses every operation gets, the response headers) is in
``openapi_conventions``; what the documents look like in ``openapi_schemas``; the webhook
opstream sends is in ``openapi_webhooks``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opstream import __version__
from opstream.app.http.durable_openapi import with_durable_streams
from opstream.app.http.openapi_conventions import (
    EVENT,
    HEADERS,
    OPERATION,
    PROBLEM,
    RESPONSES,
    header_param,
    json_content,
    no_content,
    operation,
    query,
)
from opstream.app.http.openapi_leases import LEASE_PATHS, LEASE_TAG
from opstream.app.http.openapi_schemas import SCHEMAS, new_operation_schemas
from opstream.app.http.openapi_webhooks import WEBHOOKS
from opstream.app.runtime.kinds import KIND_NAME, Kind
from opstream.events.fold import STATUSES

ENTITY_TAG = r'(W/)?"[!#-~]*"'
ENTITY_TAGS = rf"^(\*|{ENTITY_TAG}([ \t]*,[ \t]*{ENTITY_TAG})*)$"
IF_MATCH = {
    **header_param(
        "If-Match", 'the status ETag ("<lastEventSeq>") the client acted on: 412 if it moved'
    ),
    # "*" or entity tags (RFC 9110); anything else is a 400, not a silent mismatch.
    "schema": {"type": "string", "pattern": ENTITY_TAGS},
}
IF_NONE_MATCH = header_param("If-None-Match", "the status ETag last seen: 304 if unchanged")
IDEMPOTENCY_KEY = {
    **header_param(
        "Idempotency-Key",
        "1 to 255 printable characters: the same key and body return the same operation",
    ),
    # Printable ASCII with no blank at either end (those are trimmed away).
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
}
# Where the id a create returns leads: code generators and stateful testers follow these.
OPERATION_LINKS = {
    name: {"operationId": target, "parameters": {"operation_id": "$response.body#/id"}}
    for name, target in (
        ("status", "getOperation"),
        ("cancel", "cancelOperation"),
        ("events", "listOperationEvents"),
        ("stream", "streamOperationEvents"),
        ("result", "getResult"),
        ("delete", "deleteOperation"),
    )
}
OPERATION_ID = {
    "name": "operation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
AFTER = query("after", {"type": "integer", "minimum": 0}, "return what comes after this cursor")
LIMIT = query("limit", {"type": "integer", "minimum": 1}, "page size (default 100, max 1000)")
WAIT = query("wait", {"type": "number", "minimum": 0, "maximum": 60}, "long-poll seconds")
LAST_EVENT_ID = header_param("Last-Event-ID", "resume after this id (wins over ?after=)")
FEED_FILTERS = [
    query("kind", {"type": "string"}, "only this kind"),
    query("operation", {"type": "string"}, "only this operation"),
]
EVENTS = json_content({"type": "array", "items": EVENT}, "events, oldest first", "Link")
SSE = {
    "description": "Server-Sent Events: `id:` is the cursor, `event:` the event type, "
    "`data:` the event document; every event is named (use addEventListener)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
OP_DOC = json_content(OPERATION, "the operation document", "ETag")
STATUS_DOC = json_content(OPERATION, "the operation document", "ETag", "Retry-After")
HTML = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}

KIND = {"$ref": "#/components/schemas/Kind"}
PATHS: dict[str, Any] = {
    "/": {
        "get": operation("getDashboard", "dashboard", "The dashboard", {"200": HTML}, public=True),
    },
    "/operations": {
        "post": operation(
            "createOperation",
            "operations",
            "Start an operation",
            {
                "202": {
                    **json_content(
                        OPERATION,
                        "accepted: the operation document",
                        "Location",
                        "ETag",
                        "Retry-After",
                        "Idempotent-Replayed",
                    ),
                    "links": OPERATION_LINKS,
                },
                "413": PROBLEM,
                "422": PROBLEM,
            },
            parameters=[IDEMPOTENCY_KEY],
            body={
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewOperation"}}
                },
            },
            limited=True,
        ),
        "get": operation(
            "listOperations",
            "operations",
            "List operations, newest first",
            {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {
                            "items": {"type": "array", "items": OPERATION},
                            "next": {"type": ["string", "null"]},
                            "position": {"type": "integer"},
                        },
                        "required": ["items", "next", "position"],
                    },
                    "a page",
                ),
            },
            parameters=[
                query("status", {"enum": list(STATUSES)}, "only this status"),
                query("kind", {"type": "string"}, "only this kind"),
                query("limit", {"type": "integer", "minimum": 1}, "page size (max 500)"),
                query(
                    "cursor",
                    {"type": "string", "pattern": "^op_[0-9A-Z]{26}$"},
                    "the `next` of the previous page",
                ),
            ],
        ),
    },
    "/operations/{operation_id}": {
        "parameters": [OPERATION_ID],
        "get": operation(
            "getOperation",
            "operations",
            "The status resource",
            {
                "200": STATUS_DOC,
                "303": json_content(
                    OPERATION, "succeeded: see the result (`Location`)", "Location", "ETag"
                ),
                "304": no_content("unchanged", "ETag", "Retry-After"),
                "404": PROBLEM,
                "410": PROBLEM,
            },
            parameters=[WAIT, IF_NONE_MATCH],
            limited=True,
        ),
        "delete": operation(
            "deleteOperation",
            "operations",
            "Cancel a running operation, or delete a finished one's output",
            {
                "202": OP_DOC,
                "204": no_content("deleted"),
                "404": PROBLEM,
                "409": PROBLEM,
                "410": PROBLEM,
                "412": PROBLEM,
            },
            description="To stop an operation without ever deleting output, use "
            "POST /operations/{operation_id}/cancel. With If-Match, only if the operation "
            "is still at that ETag.",
            parameters=[IF_MATCH],
        ),
    },
    "/operations/{operation_id}/cancel": {
        "parameters": [OPERATION_ID],
        "post": operation(
            "cancelOperation",
            "operations",
            "Cancel: never deletes anything, safe to retry",
            {"200": OP_DOC, "202": OP_DOC, "404": PROBLEM, "409": PROBLEM, "410": PROBLEM},
        ),
    },
    "/operations/{operation_id}/result": {
        "parameters": [OPERATION_ID],
        "get": operation(
            "getResult",
            "results",
            "The result, in its own content type",
            {
                "200": {
                    "description": "the result",
                    "headers": {
                        "ETag": {"$ref": "#/components/headers/ETag"},
                        "Content-Disposition": {"$ref": "#/components/headers/Content-Disposition"},
                    },
                    # JSON unless the handler returned bytes with a type of their own.
                    "content": {
                        "application/json": {"schema": {}},
                        "*/*": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "404": PROBLEM,
                "409": PROBLEM,
                "410": PROBLEM,
            },
        ),
        "delete": operation(
            "deleteResult",
            "results",
            "Delete only the result",
            {
                "204": no_content("deleted"),
                "404": PROBLEM,
                "409": PROBLEM,
                "410": PROBLEM,
                "412": PROBLEM,
            },
            parameters=[IF_MATCH],
        ),
    },
    "/operations/{operation_id}/events": with_durable_streams(
        {
            "parameters": [OPERATION_ID],
            "get": operation(
                "listOperationEvents",
                "events",
                "Replay the history (also a read-only Durable Stream)",
                {"200": EVENTS, "404": PROBLEM},
                parameters=[AFTER, LIMIT, WAIT],
                stream_token=True,
            ),
        }
    ),
    "/operations/{operation_id}/events/stream": {
        "parameters": [OPERATION_ID],
        "get": operation(
            "streamOperationEvents",
            "events",
            "Follow the history live (SSE)",
            {"200": SSE, "204": no_content("nothing more will come"), "404": PROBLEM},
            parameters=[AFTER, LAST_EVENT_ID],
            stream_token=True,
            limited=True,
        ),
    },
    "/events": {
        "get": operation(
            "listEvents",
            "events",
            "Replay all operations' events",
            {"200": EVENTS},
            parameters=[AFTER, LIMIT, WAIT, *FEED_FILTERS],
            stream_token=True,
            feed=True,
        ),
    },
    "/events/stream": {
        "get": operation(
            "streamEvents",
            "events",
            "Follow all operations' events live (SSE)",
            {"200": SSE},
            parameters=[AFTER, LAST_EVENT_ID, *FEED_FILTERS],
            stream_token=True,
            feed=True,
            limited=True,
        ),
    },
    "/stream-tokens": {
        "post": operation(
            "createStreamToken",
            "auth",
            "A short-lived token for one operation's stream, or the feed, for URLs",
            {
                "201": json_content(
                    {
                        "type": "object",
                        "properties": {
                            "token": {"type": "string"},
                            "expiresAt": {"type": "string"},
                            "operationId": {"type": ["string", "null"]},
                            "stream": {"type": "string"},
                        },
                        "required": ["token", "expiresAt", "stream"],
                    },
                    "the token",
                ),
                "404": PROBLEM,
            },
            body={
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"operationId": {"type": ["string", "null"]}},
                            "additionalProperties": False,
                        }
                    }
                },
            },
        ),
    },
    "/kinds": {
        "get": operation(
            "listKinds",
            "kinds",
            "Registered kinds: params schemas, policies and live worker counts",
            {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"items": {"type": "array", "items": KIND}},
                        "required": ["items"],
                    },
                    "the kinds",
                )
            },
        ),
    },
    "/kinds/{name}": {
        "put": operation(
            "putKind",
            "kinds",
            "Register or update a kind (any API server then validates its params)",
            {
                "200": json_content(KIND, "updated"),
                "201": json_content(KIND, "registered"),
                "422": PROBLEM,
            },
            parameters=[
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": KIND_NAME.pattern},
                    "description": "team.job: lowercase, dot-separated",
                }
            ],
            body={
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/KindDefinition"}}
                },
            },
        ),
    },
    "/healthz": {
        "get": operation(
            "getHealth",
            "service",
            "Liveness",
            {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"status": {"const": "ok"}, "head": {"type": "integer"}},
                        "required": ["status", "head"],
                    },
                    "alive; `head` is the store's newest position",
                ),
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
            public=True,
        ),
    },
    "/readyz": {
        "get": operation(
            "getReadiness",
            "service",
            "Readiness: the database answers and its schema is current",
            {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {
                            "status": {"const": "ready"},
                            "schemaVersion": {"type": "integer"},
                        },
                        "required": ["status", "schemaVersion"],
                    },
                    "ready to take traffic",
                ),
                "503": PROBLEM,
            },
            public=True,
        ),
    },
    "/metrics": {
        "get": operation(
            "getMetrics",
            "service",
            "Prometheus metrics",
            {
                "200": {
                    "description": "metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
            public=True,
        ),
    },
    "/openapi.json": {
        "get": operation(
            "getOpenApi",
            "service",
            "This document",
            {"200": json_content({"type": "object"}, "OpenAPI 3.1")},
            public=True,
        ),
    },
    "/docs": {
        "get": operation(
            "getApiDocs",
            "service",
            "This document, browsable (Swagger UI, served from the installed package)",
            {"200": HTML},
            public=True,
        ),
    },
}

TAGS = [
    {"name": "operations", "description": "start, poll, cancel and delete operations"},
    {"name": "results", "description": "what a succeeded operation produced"},
    {"name": "events", "description": "histories: replay pages, long-polls and SSE streams"},
    {"name": "auth", "description": "stream tokens for URLs (EventSource sends no headers)"},
    {"name": "kinds", "description": "the registered operation kinds"},
    {"name": "service", "description": "health, metrics and this description"},
    {"name": "dashboard", "description": "the browser dashboard"},
    {"name": "webhooks", "description": "what opstream sends to a callbackUrl"},
]


def openapi_document(kinds: Iterable[Kind] = ()) -> dict[str, Any]:
    """The API's description; with ``kinds``, the create body spells out each kind's params."""
    schemas = {**SCHEMAS, **new_operation_schemas(kinds)}
    return {
        "openapi": "3.1.0",
        "security": [{"bearer": []}, {}],
        "info": {
            "title": "opstream",
            "version": __version__,
            "description": "Long-running operations as event streams.",
        },
        "tags": [*TAGS, LEASE_TAG],
        "paths": {**PATHS, **LEASE_PATHS},
        "webhooks": WEBHOOKS,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "streamToken": {"type": "apiKey", "in": "query", "name": "access_token"},
            },
            "schemas": schemas,
            "headers": HEADERS,
            "responses": RESPONSES,
        },
    }
