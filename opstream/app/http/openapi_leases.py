"""The OpenAPI description of the HTTP worker protocol (``/leases``), kept beside the rest
of the document (``openapi.py``) so that the protocol's routes and words live together."""

from __future__ import annotations

from typing import Any

from opstream.app.http.openapi_conventions import (
    OPERATION,
    PROBLEM,
    json_content,
    no_content,
    operation,
)
from opstream.app.runtime.context import EVENT_TYPE
from opstream.app.runtime.kinds import KIND_NAME

LEASE_TAG = {
    "name": "workers",
    "description": "the HTTP worker protocol: claim, report, renew, end (docs/workers.md)",
}
TAG = "workers"
LEASE_ID = {
    "name": "lease_id",
    "in": "path",
    "required": True,
    "description": "the lease id a claim returned: the capability to write this attempt",
    "schema": {"type": "string"},
}
# Every call on a lease: 403 for a client token (or, without tokens, a peer that is not
# loopback), 409 lease-lost once the lease is not held; 400, 401 and 503 come from
# ``operation``.
ON_A_LEASE = {"403": PROBLEM, "409": PROBLEM}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return json_content(schema, description)


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

CLAIMED = _json(
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
                "required": ["id", "attempt", "expiresAt"],
            },
            "operation": OPERATION,
        },
        "required": ["lease", "operation"],
    },
    "the lease and the operation (OperationStarted appended)",
)

LEASE_PATHS: dict[str, Any] = {
    "/leases": {
        "post": operation(
            "claimLease",
            TAG,
            "Claim the oldest queued operation of some kinds (long-poll)",
            {
                "201": CLAIMED,
                "204": no_content("nothing came within wait seconds"),
                "403": PROBLEM,
                "413": PROBLEM,
            },
            body=_body(
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
        )
    },
    "/leases/{lease_id}": {
        "parameters": [LEASE_ID],
        "put": operation(
            "renewLease",
            TAG,
            "Renew the lease",
            {"200": HELD, "413": PROBLEM, **ON_A_LEASE},
            body=_body({"leaseSeconds": {"type": "number", "minimum": 1, "maximum": 3600}}),
        ),
        "delete": operation(
            "handBackLease",
            TAG,
            "Hand the operation back (OperationRetried, handedBack: not an attempt)",
            {"204": no_content("handed back"), **ON_A_LEASE},
        ),
    },
    "/leases/{lease_id}/events": {
        "parameters": [LEASE_ID],
        "post": operation(
            "reportEvents",
            TAG,
            "Append events atomically, in order (conditional with expectedSeq)",
            {"200": HELD, "413": PROBLEM, "422": PROBLEM, **ON_A_LEASE},
            body=_body(
                {
                    "events": {
                        "type": "array",
                        "items": REPORTED_EVENT,
                        "minItems": 1,
                        "maxItems": 1000,
                    },
                    "expectedSeq": {"type": "integer", "minimum": 0},
                },
                ["events"],
            ),
        ),
    },
    "/leases/{lease_id}/result": {
        "parameters": [LEASE_ID],
        "put": operation(
            "putLeaseResult",
            TAG,
            "Upload the result bytes, in their own content type, for the outcome",
            {"204": no_content("kept"), "413": PROBLEM, **ON_A_LEASE},
            description="The result's bytes, sent with their own `Content-Type` (`text/csv`, "
            "`application/pdf`, …): any type is accepted and served back as given by "
            "`GET /operations/{operation_id}/result`. (Described as `application/octet-stream`, "
            "which client generators can send.)",
            body={
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            },
        ),
    },
    "/leases/{lease_id}/outcome": {
        "parameters": [LEASE_ID],
        "post": operation(
            "postLeaseOutcome",
            TAG,
            "End the attempt: succeeded, failed (retry?) or cancelled",
            {"200": _json(OPERATION, "the operation"), "413": PROBLEM, **ON_A_LEASE},
            body=_body(
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
        ),
    },
}
