"""The schemas of the OpenAPI description (``components.schemas``): what the documents
opstream reads and writes look like — problems, events, operations, kinds — and the create
body, one named variant per registered kind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opstream.app.runtime.catalog import MAX_DESCRIPTION
from opstream.app.runtime.kinds import Kind

KIND_POLICY: dict[str, Any] = {
    "timeoutSeconds": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "description": "an attempt running longer is stopped; the operation fails (Timeout)",
    },
    "maxAttempts": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 100,
        "description": "attempts after lost leases and retryable failures",
    },
}

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
    "KindDefinition": {
        "type": "object",
        "properties": {
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "paramsSchema": {"type": "object", "description": "a JSON Schema (2020-12)"},
            **KIND_POLICY,
        },
        "required": ["paramsSchema"],
        "additionalProperties": False,
    },
    "Kind": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "paramsSchema": {"type": "object", "description": "a JSON Schema"},
            **KIND_POLICY,
            "workers": {
                "type": "integer",
                "description": "workers that asked for the kind within their lease period",
            },
        },
        "required": ["name", "description", "paramsSchema", "workers"],
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


def new_operation_schemas(kinds: Iterable[Kind]) -> dict[str, Any]:
    """The body of ``POST /operations``: one named variant per registered kind, with its
    params (``NewOperation.demo.countdown``, ``Params.demo.countdown``). Named, not inline:
    code generators make one model of each, named after the kind."""
    schemas: dict[str, Any] = {}
    variants = []
    for kind in kinds:
        # Kind names (``[a-z0-9_-]`` parts joined by dots) are valid component names.
        schemas[f"Params.{kind.name}"] = kind.schema
        schemas[f"NewOperation.{kind.name}"] = {
            "type": "object",
            "description": kind.description,
            "properties": {
                "kind": {"const": kind.name},
                "params": {"$ref": f"#/components/schemas/Params.{kind.name}"},
                "callbackUrl": {"type": ["string", "null"], "format": "uri"},
            },
            "required": ["kind", "params"],
            "additionalProperties": False,
        }
        variants.append({"$ref": f"#/components/schemas/NewOperation.{kind.name}"})
    schemas["NewOperation"] = {"oneOf": variants} if variants else SCHEMAS["NewOperation"]
    return schemas
