"""Who is asking: bearer tokens mapped to tenants, and short-lived signed stream tokens.

Tokens are configured per tenant (``OPSTREAM_TOKENS`` or a JSON file) and kept only as
SHA-256 digests; a presented token is compared against every digest in constant time.
Without any token configured opstream runs open (one tenant, ``""``) — which ``serve``
allows only on a loopback address unless told ``--insecure``.

An ``EventSource`` cannot send headers, so a client that holds a bearer token asks
``POST /stream-tokens`` for a short-lived token scoped to one operation (or to its feed)
and puts it in the stream's URL as ``?access_token=``. Such a token is an HMAC-signed
claim; it grants reading that one stream or replay and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

OPEN_TENANT = ""
STREAM_TOKEN_SECONDS = 300
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Unauthenticated(Exception):
    """No credentials, or credentials that do not check out."""


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


@dataclass
class Tenants:
    """The configured tenants: token digests, and each tenant's webhook secret."""

    digests: dict[bytes, str] = field(default_factory=dict)
    webhook_secrets: dict[str, str] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return not self.digests

    def add(self, tenant: str, token: str) -> None:
        if not TENANT_NAME.match(tenant):
            raise ValueError(f"tenant names are letters, digits, '.', '_', '-': {tenant!r}")
        if len(token) < 16:
            raise ValueError(f"tenant {tenant}: tokens must be at least 16 characters")
        self.digests[_digest(token)] = tenant

    def authenticate(self, token: str) -> str:
        """The tenant of a bearer token; compares against every digest in constant time."""
        presented = _digest(token)
        found = None
        for digest, tenant in self.digests.items():
            if hmac.compare_digest(digest, presented):
                found = tenant
        if found is None:
            raise Unauthenticated("the token is not valid")
        return found

    @classmethod
    def load(cls, spec: str = "", path: str = "") -> Tenants:
        """From ``tenant:token,tenant:token`` and/or a JSON file
        ``{"tenants": {"acme": {"tokens": ["..."], "webhookSecret": "..."}}}``."""
        tenants = cls()
        for pair in filter(None, (part.strip() for part in spec.split(","))):
            tenant, sep, token = pair.partition(":")
            if not sep:
                raise ValueError("OPSTREAM_TOKENS is a list of tenant:token pairs")
            tenants.add(tenant.strip(), token.strip())
        if path:
            config: dict[str, Any] = orjson.loads(Path(path).read_bytes())
            for tenant, entry in config.get("tenants", {}).items():
                for token in entry.get("tokens", []):
                    tenants.add(tenant, token)
                if secret := entry.get("webhookSecret"):
                    tenants.webhook_secrets[tenant] = str(secret)
        return tenants


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


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
