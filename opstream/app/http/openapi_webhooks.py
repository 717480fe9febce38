"""The ``webhooks`` section of the OpenAPI description: the POST opstream sends.

Describes ``opstream.app.runtime.webhooks``: a Standard Webhooks request to an operation's
``callbackUrl`` when it ends (docs/webhooks.md), so receivers can be generated and checked
from the same document as the API.
"""

from __future__ import annotations

from typing import Any


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"in": "header", "required": True, "description": description, "schema": schema}


WEBHOOK_HEADERS = [
    {
        "name": "webhook-id",
        **_header(
            "the same for every attempt of one delivery: deduplicate on it",
            {"type": "string", "pattern": "^msg_"},
        ),
    },
    {
        "name": "webhook-timestamp",
        **_header(
            "unix seconds of this attempt: refuse it when far from your clock (replays)",
            {"type": "string", "pattern": "^[0-9]+$"},
        ),
    },
    {
        "name": "webhook-signature",
        **_header(
            "space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, keyed with the "
            "bytes of the `whsec_` secret; accept the request if any one verifies",
            {"type": "string", "pattern": "^v1,"},
        ),
    },
]

WEBHOOK_BODY = {
    "type": "object",
    "properties": {
        "type": {
            "enum": ["operation.succeeded", "operation.failed", "operation.cancelled"],
            "description": "`operation.<status>`",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "when the operation ended (its terminal event)",
        },
        "data": {
            "allOf": [{"$ref": "#/components/schemas/Operation"}],
            "description": "the operation document as of its terminal event; `lastEventSeq` "
            "is that event's seq, the cursor to read or follow the history from",
        },
    },
    "required": ["type", "timestamp", "data"],
}

WEBHOOKS: dict[str, Any] = {
    "operationFinished": {
        "post": {
            "operationId": "operationFinished",
            "tags": ["webhooks"],
            "summary": "Sent to an operation's callbackUrl when it ends",
            "description": "Delivered at least once: retried on a schedule that spans days "
            "(docs/webhooks.md; a `Retry-After` in the answer is honoured) until a `2xx` "
            "answers or the schedule is used up; each attempt is a `WebhookDelivered` or "
            "`WebhookFailed` event in the operation's history. The receiver has 15 s (by "
            "default) to answer; redirects are not followed.",
            "parameters": WEBHOOK_HEADERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WEBHOOK_BODY}},
            },
            "responses": {
                "2XX": {"description": "acknowledged: no further attempt"},
                "410": {"description": "gone: this delivery is given up at once"},
                "default": {
                    "description": "not acknowledged: the delivery is retried, no sooner "
                    "than a `Retry-After` it carries",
                    "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
                },
            },
        }
    }
}
