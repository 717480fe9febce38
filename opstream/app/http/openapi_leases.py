"""The OpenAPI description of the HTTP worker protocol (``/leases``), kept beside the rest
of the document (``openapi.py``) so that the protocol's routes and words live together."""

from __future__ import annotations

from typing import Any

from opstream.app.runtime.context import EVENT_TYPE
from opstream.app.runtime.kinds import KIND_NAME

PROBLEM = {"$ref": "#/components/responses/Problem"}
TAGS = ["workers"]
LEASE_ID = {
    "name": "lease_id",
    "in": "path",
    "required": True,
    "description": "the lease id a claim returned: the capability to write this attempt",
    "schema": {"type": "string"},
}
# Every call on a lease: 401/403 without worker credentials, 409 lease-lost once not held.
LEASE_PROBLEMS = {"400": PROBLEM, "401": PROBLEM, "403": PROBLEM, "409": PROBLEM}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


HELD = _json(
    {
        "type": "object",
        "properties": {
            "lastEventSeq": {"type": "integer"},
            "expiresAt": {"type": "string", "format": "date-time"},
            "cancelRequested": {"type": "boolean"},
        },
        "required": ["cancelRequested"],
    },
    "the lease is held; cancelRequested: stop and post the cancelled outcome",
)
REPORTED_EVENT = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "pattern": EVENT_TYPE.pattern},
        "message": {"type": "string"},
        "details": {"type": "object"},
    },
    "required": ["type"],
}

LEASE_PATHS: dict[str, Any] = {
    "/leases": {
        "post": {
            "operationId": "claimLease",
            "tags": TAGS,
            "summary": "Claim the oldest queued operation of some kinds (long-poll)",
            "requestBody": _body(
                {
                    "kinds": {
                        "type": "array",
                        "items": {"type": "string", "pattern": KIND_NAME.pattern},
                        "minItems": 1,
                        "maxItems": 100,
                    },
                    "worker": {"type": "string", "maxLength": 200},
                    "leaseSeconds": {"type": "number", "minimum": 1, "maximum": 3600},
                    "wait": {"type": "number", "minimum": 0, "maximum": 60},
                },
                ["kinds"],
            ),
            "responses": {
                "201": _json(
                    {
                        "type": "object",
                        "properties": {
                            "lease": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "attempt": {"type": "integer"},
                                    "expiresAt": {"type": "string", "format": "date-time"},
                                },
                            },
                            "operation": {"$ref": "#/components/schemas/Operation"},
                        },
                    },
                    "the lease and the operation (OperationStarted appended)",
                ),
                "204": {"description": "nothing came within wait seconds"},
                **LEASE_PROBLEMS,
            },
        }
    },
    "/leases/{lease_id}": {
        "parameters": [LEASE_ID],
        "put": {
            "operationId": "renewLease",
            "tags": TAGS,
            "summary": "Renew the lease",
            "requestBody": _body(
                {"leaseSeconds": {"type": "number", "minimum": 1, "maximum": 3600}}
            ),
            "responses": {"200": HELD, **LEASE_PROBLEMS},
        },
        "delete": {
            "operationId": "handBackLease",
            "tags": TAGS,
            "summary": "Hand the operation back (OperationRetried, handedBack: not an attempt)",
            "responses": {"204": {"description": "handed back"}, **LEASE_PROBLEMS},
        },
    },
    "/leases/{lease_id}/events": {
        "parameters": [LEASE_ID],
        "post": {
            "operationId": "reportEvents",
            "tags": TAGS,
            "summary": "Append events atomically, in order (conditional with expectedSeq)",
            "requestBody": _body(
                {
                    "events": {"type": "array", "items": REPORTED_EVENT, "maxItems": 1000},
                    "expectedSeq": {"type": "integer", "minimum": 0},
                },
                ["events"],
            ),
            "responses": {"200": HELD, "413": PROBLEM, "422": PROBLEM, **LEASE_PROBLEMS},
        },
    },
    "/leases/{lease_id}/result": {
        "parameters": [LEASE_ID],
        "put": {
            "operationId": "putLeaseResult",
            "tags": TAGS,
            "summary": "Upload the result bytes, in their own content type, for the outcome",
            "requestBody": {"required": True, "content": {"*/*": {"schema": {}}}},
            "responses": {"204": {"description": "kept"}, "413": PROBLEM, **LEASE_PROBLEMS},
        },
    },
    "/leases/{lease_id}/outcome": {
        "parameters": [LEASE_ID],
        "post": {
            "operationId": "postLeaseOutcome",
            "tags": TAGS,
            "summary": "End the attempt: succeeded, failed (retry?) or cancelled",
            "requestBody": _body(
                {
                    "status": {"enum": ["succeeded", "failed", "cancelled"]},
                    "result": {},
                    "error": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "pattern": EVENT_TYPE.pattern},
                            "message": {"type": "string"},
                        },
                    },
                    "retry": {"type": "boolean"},
                },
                ["status"],
            ),
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Operation"}, "the operation"),
                **LEASE_PROBLEMS,
            },
        },
    },
}
