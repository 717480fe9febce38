"""Cross-origin requests from browsers: off unless origins are allowed by name.

A page served from another origin (a team's own dashboard) may call the API only if the
operator lists that origin (``--cors-origin`` / ``OPSTREAM_CORS_ORIGINS``). Starlette's
``CORSMiddleware`` answers preflights and adds the headers; the lists below say which
request headers a page may send and which response headers its script may read — without
``Access-Control-Expose-Headers`` a script sees neither ``Location`` after a create nor the
``ETag`` and ``Retry-After`` that polling relies on.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")

# What a client of this API sends: bearer tokens, JSON bodies, the idempotency key, the
# conditional headers of polling and deleting, and the cursor of a resumed stream.
REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "Last-Event-ID",
)

# What a script needs to read back (the CORS-safelisted ones, Content-Type and the like,
# are always readable).
EXPOSED_HEADERS = (
    "Location",
    "ETag",
    "Retry-After",
    "Link",
    "Idempotent-Replayed",
    "Content-Disposition",
    "WWW-Authenticate",
    "Stream-Next-Offset",
    "Stream-Up-To-Date",
    "Stream-Cursor",
    "Stream-Closed",
)

# How long a browser may reuse a preflight's answer, in seconds.
PREFLIGHT_MAX_AGE = 600


def cors_middleware(origins: tuple[str, ...]) -> list[Middleware]:
    """The middleware that lets ``origins`` call the API (``*``: any origin); none at all
    when no origin is allowed, so a preflight is then a ``405`` like any unknown method.

    Credentials (cookies) are not allowed: opstream authenticates with bearer tokens,
    which a page sends in ``Authorization`` and which need no credentialed request."""
    if not origins:
        return []
    for origin in origins:
        check_origin(origin)
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=list(METHODS),
            allow_headers=list(REQUEST_HEADERS),
            expose_headers=list(EXPOSED_HEADERS),
            max_age=PREFLIGHT_MAX_AGE,
        )
    ]


def check_origin(origin: str) -> None:
    """Refuse what a browser never sends as ``Origin`` (a path, a trailing slash, no
    scheme): such an entry would silently match nothing. Raises ``ValueError``."""
    if origin == "*":
        return
    parts = urlsplit(origin)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or origin != (f"{parts.scheme}://{parts.netloc}")
    ):
        raise ValueError(
            f"CORS origin {origin!r} is not an origin: write scheme://host[:port], "
            "with no path or trailing slash (e.g. https://app.example.com), or *"
        )
