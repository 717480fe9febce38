"""Reading what clients send — bodies, cursors, limits — and refusing it clearly."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from opstream.app.http.problems import InvalidJson, InvalidRequest, PayloadTooLarge
from opstream.events.errors import InvalidCursor

# RFC 9110 If-Match: "*" or a list of entity tags, each optionally weak.
ENTITY_TAG_LIST = re.compile(
    r'^(\*|(W/)?"[!#-~\x80-\xff]*"([ \t]*,[ \t]*(W/)?"[!#-~\x80-\xff]*")*)$'
)
MAX_WAIT = 60.0
MAX_CURSOR = 2**63 - 1


async def json_body(request: Request, max_bytes: int) -> Any:
    """The request body parsed as JSON, at most ``max_bytes`` long."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return strict_json(b"".join(chunks))


def strict_json(body: bytes) -> Any:
    """JSON that means one thing: UTF-8, no duplicate keys, no NaN or Infinity, integers
    that fit in 64 bits, nesting a person could write."""
    if not body.strip():
        raise InvalidJson("the body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_int=_bounded_int,
        )
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJson("the body is nested too deeply") from None
    except _Refused as exc:
        raise InvalidJson(str(exc)) from None


class _Refused(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text) > 20 or not -(2**63) <= (value := int(text)) < 2**64:
        raise _Refused("integers must fit in 64 bits")
    return value


def cursor(raw: str | None, name: str, *, newest: int) -> int:
    """A replay or stream cursor: a whole number from 0 up to ``newest``."""
    if raw is None or raw.strip() == "":
        return 0
    text = raw.strip()
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_CURSOR:
        raise InvalidCursor(f"{name} must be a whole number from 0 to {newest}, not {raw!r}")
    value = int(text)
    if value > newest:
        raise InvalidCursor(f"{name} {value} lies in the future: the newest is {newest}")
    return value


def integer(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter; values above ``high`` are clamped, not refused."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {raw!r}", field=name) from None
    if value < low:
        raise InvalidRequest(f"{name} must be at least {low}", field=name)
    return min(value, high)


def wait_seconds(request: Request) -> float:
    """``?wait=SECONDS`` for long-polling: 0 to 60."""
    raw = request.query_params.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"wait must be a number of seconds, not {raw!r}") from None
    if not 0 <= value <= MAX_WAIT:
        raise InvalidRequest(f"wait must be between 0 and {MAX_WAIT:g} seconds")
    return value


def choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", field=name)
    return raw


def if_match(request: Request) -> str | None:
    """The ``If-Match`` header, if sent; one that is not ``*`` or a list of entity tags
    (empty, unquoted) is a client's mistake, refused rather than read as "no match"."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    if not ENTITY_TAG_LIST.fullmatch(value.strip()):
        raise InvalidRequest(
            'If-Match must be * or the ETag of the status, such as "17"', field="If-Match"
        )
    return value
