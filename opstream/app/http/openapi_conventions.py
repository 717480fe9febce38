"""How ``openapi.py`` describes an operation: the helpers and the shared components.

Every operation is written with ``operation()``, which adds what holds for all of them, so
the description cannot forget it:

- ``operationId`` (lowerCamelCase, unique; code generators name methods after it) and one tag;
- ``400``: the application's problem, and the ``text/plain`` answer that uvicorn sends
  itself, before the application sees the request, when a request cannot be parsed (an
  ``Authorization`` header with bytes HTTP does not allow, a malformed request line);
- ``401`` (with ``WWW-Authenticate``) unless the operation is ``public``: it happens only
  when bearer tokens are configured;
- ``429`` (with ``Retry-After``) when ``limited`` (docs/security.md, "Limits"); ``403``
  when ``feed``: a stream token scoped to one operation cannot read the feed;
- ``503`` (with ``Retry-After``) unless ``public``: the database failed or the server is
  stopping.

Response headers are referenced from ``HEADERS`` with ``headers(...)``, problems with
``PROBLEM``, JSON bodies with ``json_content``, query parameters with ``query``.
"""

from __future__ import annotations

from typing import Any

PROBLEM = {"$ref": "#/components/responses/Problem"}
OPERATION = {"$ref": "#/components/schemas/Operation"}
EVENT = {"$ref": "#/components/schemas/Event"}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def header_param(name: str, description: str) -> dict[str, Any]:
    """An optional request header."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


def headers(*names: str) -> dict[str, Any]:
    """References to the response headers of ``HEADERS``, by name."""
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def json_content(schema: dict[str, Any], description: str, *header_names: str) -> dict[str, Any]:
    """A JSON response, with the named response headers."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if header_names:
        response["headers"] = headers(*header_names)
    return response


def no_content(description: str, *header_names: str) -> dict[str, Any]:
    """A response without a body, with the named response headers."""
    response: dict[str, Any] = {"description": description}
    if header_names:
        response["headers"] = headers(*header_names)
    return response


def operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: dict[str, Any],
    *,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    public: bool = False,
    limited: bool = False,
    feed: bool = False,
    stream_token: bool = False,
) -> dict[str, Any]:
    """One operation, with the responses every operation of its sort can give (above)."""
    described: dict[str, Any] = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        described["description"] = description
    if parameters:
        described["parameters"] = parameters
    if body is not None:
        described["requestBody"] = body
    everywhere: dict[str, Any] = {"400": BAD_REQUEST}
    if public:
        described["security"] = []  # no credentials are ever asked for
    else:
        everywhere["401"] = {"$ref": "#/components/responses/Unauthenticated"}
        everywhere["503"] = {"$ref": "#/components/responses/Unavailable"}
    if stream_token:
        # EventSource cannot send headers: a short-lived token in the URL (POST /stream-tokens).
        described["security"] = [{"bearer": []}, {"streamToken": []}, {}]
    if limited:
        everywhere["429"] = {"$ref": "#/components/responses/TooManyRequests"}
    if feed:
        everywhere["403"] = {"$ref": "#/components/responses/Forbidden"}
    described["responses"] = dict(sorted({**everywhere, **responses}.items()))
    return described


BAD_REQUEST = {"$ref": "#/components/responses/BadRequest"}

HEADERS: dict[str, Any] = {
    "Location": {
        "description": "where to go: the operation's status resource after a create, its "
        "result after success (relative to the server's base, mount path included)",
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": 'the operation\'s `"<lastEventSeq>"`: send it back in `If-None-Match` '
        "(a `304` while nothing changed) or `If-Match` (`412` if it moved)",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "whole seconds (at least 1) before asking again: from the operation's "
        "own pace on a status, the wait that succeeds on a `429` or `503`",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Link": {
        "description": 'while a page is full: `<…?after=LAST>; rel="next"`, the next page',
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when an `Idempotency-Key` made this the first answer again",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "WWW-Authenticate": {
        "description": "`Bearer` (RFC 6750)",
        "schema": {"type": "string"},
    },
    "Content-Disposition": {
        "description": "a file name, for a result that is not JSON",
        "schema": {"type": "string"},
    },
}


def _problem(description: str, *header_names: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if header_names:
        response["headers"] = headers(*header_names)
    return response


RESPONSES: dict[str, Any] = {
    "Problem": _problem("an RFC 9457 problem"),
    "BadRequest": {
        "description": "the request is not valid: a problem from the application, or, for a "
        "request that cannot be parsed as HTTP at all (such as a header with bytes HTTP does "
        "not allow), a short `text/plain` answer from the HTTP server itself",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    "Unauthenticated": _problem(
        "no valid bearer token (only when tokens are configured)", "WWW-Authenticate"
    ),
    "Forbidden": _problem("the stream token does not reach this resource"),
    "TooManyRequests": _problem("a per-tenant limit: retry after `Retry-After`", "Retry-After"),
    "Unavailable": _problem(
        "the database failed or the server is stopping: retry after `Retry-After`",
        "Retry-After",
    ),
}
