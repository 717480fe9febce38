"""The OpenAPI 3.1 description of the HTTP API (``GET /openapi.json``).

Written out rather than generated: it is part of the contract. A test checks that every
route of the application appears here, so it cannot fall behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opstream import __version__
from opstream.app.runtime.kinds import Kind
from opstream.events.fold import STATUSES

PROBLEM = {"$ref": "#/components/responses/Problem"}
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'the status ETag ("<lastEventSeq>") the client acted on: 412 if it moved',
    "schema": {"type": "string"},
}
OPERATION_ID = {
    "name": "operation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


AFTER = _query("after", {"type": "integer", "minimum": 0}, "return what comes after this cursor")
LIMIT = _query("limit", {"type": "integer", "minimum": 1}, "page size (default 100, max 1000)")
WAIT = _query("wait", {"type": "number", "minimum": 0, "maximum": 60}, "long-poll seconds")
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "resume after this id",
}
EVENTS = _json({"type": "array", "items": {"$ref": "#/components/schemas/Event"}}, "events")
SSE = {
    "description": "Server-Sent Events",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
OPERATION = {"$ref": "#/components/schemas/Operation"}
OP_DOC = _json(OPERATION, "the operation document")

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["type", "title", "status", "detail"],
    },
    "Event": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "operationId": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "position": {"type": "integer"},
            "type": {"type": "string"},
            "kind": {"type": "string"},
            "message": {"type": "string"},
            "happenedAt": {"type": "string", "format": "date-time"},
            "details": {"type": "object"},
        },
        "required": [
            "id",
            "operationId",
            "seq",
            "position",
            "type",
            "message",
            "happenedAt",
            "details",
        ],
    },
    "Operation": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "status": {
                "enum": ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
            },
            "params": {"type": "object"},
            "progress": {
                "type": "object",
                "properties": {
                    "percent": {"type": "number"},
                    "stage": {"type": ["string", "null"]},
                    "message": {"type": "string"},
                    "estimatedTimeRemaining": {"type": ["number", "null"]},
                },
            },
            "attempt": {"type": "integer"},
            "createdAt": {"type": "string"},
            "startedAt": {"type": ["string", "null"]},
            "updatedAt": {"type": "string"},
            "finishedAt": {"type": ["string", "null"]},
            "lastEventSeq": {"type": "integer"},
            "error": {"type": ["object", "null"]},
            "result": {"type": ["object", "null"]},
            "links": {"type": "object"},
        },
        "required": ["id", "kind", "status", "params", "progress", "lastEventSeq", "links"],
    },
    "NewOperation": {
        "type": "object",
        "properties": {
            "kind": {"type": "string"},
            "params": {"type": "object"},
            "callbackUrl": {"type": ["string", "null"], "format": "uri"},
        },
        "required": ["kind"],
    },
}

PATHS: dict[str, Any] = {
    "/": {
        "get": {
            "summary": "The dashboard",
            "responses": {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/operations": {
        "post": {
            "summary": "Start an operation",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewOperation"}}
                },
            },
            "responses": {"202": OP_DOC, "400": PROBLEM, "413": PROBLEM, "422": PROBLEM},
        },
        "get": {
            "summary": "List operations, newest first",
            "parameters": [
                _query("status", {"enum": list(STATUSES)}, "only this status"),
                _query("kind", {"type": "string"}, "only this kind"),
                _query("limit", {"type": "integer", "minimum": 1}, "page size (max 500)"),
                _query(
                    "cursor",
                    {"type": "string", "pattern": "^op_[0-9A-Z]{26}$"},
                    "the `next` of the previous page",
                ),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "items": {"type": "array", "items": OPERATION},
                            "next": {"type": ["string", "null"]},
                            "position": {"type": "integer"},
                        },
                    },
                    "a page",
                ),
                "400": PROBLEM,
            },
        },
    },
    "/operations/{operation_id}": {
        "parameters": [OPERATION_ID],
        "get": {
            "summary": "The status resource",
            "parameters": [
                WAIT,
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": OP_DOC,
                "303": OP_DOC,
                "304": {"description": "unchanged"},
                "400": PROBLEM,
                "404": PROBLEM,
                "410": PROBLEM,
            },
        },
        "delete": {
            "summary": "Cancel a running operation, or delete a finished one's output",
            "description": "To stop an operation without ever deleting output, use "
            "POST /operations/{operation_id}/cancel. With If-Match, only if the operation "
            "is still at that ETag.",
            "parameters": [IF_MATCH],
            "responses": {
                "202": OP_DOC,
                "204": {"description": "deleted"},
                "404": PROBLEM,
                "409": PROBLEM,
                "410": PROBLEM,
                "412": PROBLEM,
            },
        },
    },
    "/operations/{operation_id}/cancel": {
        "parameters": [OPERATION_ID],
        "post": {
            "summary": "Cancel: never deletes anything, safe to retry",
            "responses": {
                "200": OP_DOC,
                "202": OP_DOC,
                "404": PROBLEM,
                "409": PROBLEM,
                "410": PROBLEM,
            },
        },
    },
    "/operations/{operation_id}/result": {
        "parameters": [OPERATION_ID],
        "get": {
            "summary": "The result, in its own content type",
            "responses": {
                "200": {"description": "the result", "content": {"*/*": {"schema": {}}}},
                "404": PROBLEM,
                "409": PROBLEM,
                "410": PROBLEM,
            },
        },
        "delete": {
            "summary": "Delete only the result",
            "parameters": [IF_MATCH],
            "responses": {
                "204": {"description": "deleted"},
                "404": PROBLEM,
                "409": PROBLEM,
                "410": PROBLEM,
                "412": PROBLEM,
            },
        },
    },
    "/operations/{operation_id}/events": {
        "parameters": [OPERATION_ID],
        "get": {
            "summary": "Replay the history",
            "parameters": [AFTER, LIMIT, WAIT],
            "responses": {"200": EVENTS, "400": PROBLEM, "404": PROBLEM},
        },
    },
    "/operations/{operation_id}/events/stream": {
        "parameters": [OPERATION_ID],
        "get": {
            "summary": "Follow the history live (SSE)",
            "parameters": [AFTER, LAST_EVENT_ID],
            "responses": {
                "200": SSE,
                "204": {"description": "nothing more will come"},
                "400": PROBLEM,
                "404": PROBLEM,
            },
        },
    },
    "/events": {
        "get": {
            "summary": "Replay all operations' events",
            "parameters": [
                AFTER,
                LIMIT,
                WAIT,
                _query("kind", {"type": "string"}, "only this kind"),
                _query("operation", {"type": "string"}, "only this operation"),
            ],
            "responses": {"200": EVENTS, "400": PROBLEM},
        },
    },
    "/events/stream": {
        "get": {
            "summary": "Follow all operations' events live (SSE)",
            "parameters": [
                AFTER,
                LAST_EVENT_ID,
                _query("kind", {"type": "string"}, "only this kind"),
                _query("operation", {"type": "string"}, "only this operation"),
            ],
            "responses": {"200": SSE, "400": PROBLEM},
        },
    },
    "/stream-tokens": {
        "post": {
            "summary": "A short-lived token for one operation's stream, or the feed, for URLs",
            "requestBody": {
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
            "responses": {
                "201": _json(
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
                "400": PROBLEM,
                "401": PROBLEM,
                "404": PROBLEM,
            },
        }
    },
    "/kinds": {
        "get": {
            "summary": "Registered kinds and their params schemas",
            "responses": {"200": _json({"type": "object"}, "the kinds")},
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "responses": {"200": _json({"type": "object"}, "alive"), "503": PROBLEM},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "getReadiness",
            "tags": ["service"],
            "summary": "Readiness: the database answers and its schema is current",
            "responses": {
                "200": _json(
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
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI")},
        }
    },
}


def new_operation_schema(kinds: Iterable[Kind]) -> dict[str, Any]:
    """The body of ``POST /operations``: one variant per registered kind, with its params."""
    variants = [
        {
            "type": "object",
            "properties": {
                "kind": {"const": kind.name, "description": kind.description},
                "params": kind.schema,
                "callbackUrl": {"type": ["string", "null"], "format": "uri"},
            },
            "required": ["kind", "params"],
            "additionalProperties": False,
        }
        for kind in kinds
    ]
    return {"oneOf": variants} if variants else SCHEMAS["NewOperation"]


def openapi_document(kinds: Iterable[Kind] = ()) -> dict[str, Any]:
    """The API's description; with ``kinds``, the create body spells out each kind's params."""
    schemas = {**SCHEMAS, "NewOperation": new_operation_schema(kinds)}
    return {
        "openapi": "3.1.0",
        "security": [{"bearer": []}, {}],
        "info": {
            "title": "opstream",
            "version": __version__,
            "description": "Long-running operations as event streams.",
        },
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "streamToken": {"type": "apiKey", "in": "query", "name": "access_token"},
            },
            "schemas": schemas,
            "responses": {
                "Problem": {
                    "description": "an RFC 9457 problem",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
        },
    }
