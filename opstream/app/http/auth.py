"""Who is asking: bearer tokens mapped to tenants, and short-lived signed stream tokens.

Bearer tokens are checked against the configured tenants (``opstream.app.runtime.tenants``).
Without any token configured opstream runs open (one tenant, ``""``) — which ``serve``
allows only on a loopback address unless told ``--insecure``.

An ``EventSource`` cannot send headers, so a client that holds a bearer token asks
``POST /stream-tokens`` for a short-lived token scoped to one operation (or to its feed)
and puts it in the stream's URL as ``?access_token=``. Such a token is an HMAC-signed
claim; it grants reading that one stream or replay and nothing else.
"""

from __future__ import annotations

import base64
import hmac
import os
import time
from dataclasses import dataclass

import orjson

from opstream.app.runtime.tenants import OPEN_TENANT, Unauthenticated

STREAM_TOKEN_SECONDS = 300


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, and how far a stream token lets it reach."""

    tenant: str
    # For a stream token: the one operation it may read (None: the tenant's whole feed).
    # For a bearer token: ``full`` is true and this is unused.
    operation_id: str | None = None
    full: bool = True

    def may_read_operation(self, operation_id: str) -> bool:
        return self.full or self.operation_id in (None, operation_id)

    def may_read_feed(self) -> bool:
        return self.full or self.operation_id is None


# Everyone, when no token is configured (immutable, so one instance serves every request).
OPEN_CALLER = Caller(OPEN_TENANT)


class StreamTokens:
    """Issues and checks HMAC-signed, short-lived stream tokens."""

    def __init__(self, secret: bytes | None = None, ttl: int = STREAM_TOKEN_SECONDS) -> None:
        # Without a configured secret, tokens are valid only in the process that issued
        # them; several servers behind one address must share OPSTREAM_SECRET.
        self.secret = secret or os.urandom(32)
        self.ttl = ttl

    def issue(self, tenant: str, operation_id: str | None) -> tuple[str, int]:
        expires = int(time.time()) + self.ttl
        claims = orjson.dumps({"t": tenant, "o": operation_id, "e": expires})
        body = _b64(claims)
        return f"{body}.{_b64(self._sign(body))}", expires

    def check(self, token: str) -> Caller:
        body, _, signature = token.partition(".")
        try:
            expected = self._sign(body)
            if not hmac.compare_digest(expected, _unb64(signature)):
                raise Unauthenticated("the stream token is not valid")
            claims = orjson.loads(_unb64(body))
            tenant, operation_id, expires = claims["t"], claims["o"], int(claims["e"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            raise Unauthenticated("the stream token is not valid") from None
        if expires < time.time():
            raise Unauthenticated("the stream token has expired")
        return Caller(str(tenant), operation_id, full=False)

    def _sign(self, body: str) -> bytes:
        return hmac.new(self.secret, b"opstream-stream-token." + body.encode(), "sha256").digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("use Authorization: Bearer <token>")
    return token.strip()
