"""The configured tenants: who may call, by token, and each tenant's webhook secret.

Tokens are configured per tenant (``OPSTREAM_TOKENS`` or a JSON file) and kept only as
SHA-256 digests; a presented token is compared against every digest in constant time.
Without any token configured opstream runs open (one tenant, ``""``). The HTTP side
authenticates requests with it (``opstream.app.http.auth``); the runtime signs each
tenant's webhooks with its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from opstream.app.runtime.signing import parse_keyring

OPEN_TENANT = ""
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Unauthenticated(Exception):
    """No credentials, or credentials that do not check out."""


@dataclass
class Tenants:
    """The configured tenants: token digests, and each tenant's webhook secret."""

    digests: dict[bytes, str] = field(default_factory=dict)
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    # Tokens with the worker role (the HTTP worker protocol, /leases), and only that role:
    # a client token cannot claim work, a worker token cannot act as a client.
    worker_digests: dict[bytes, str] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return not self.digests and not self.worker_digests

    def add(self, tenant: str, token: str, *, worker: bool = False) -> None:
        if not TENANT_NAME.match(tenant):
            raise ValueError(f"tenant names are letters, digits, '.', '_', '-': {tenant!r}")
        if len(token) < 16:
            raise ValueError(f"tenant {tenant}: tokens must be at least 16 characters")
        (self.worker_digests if worker else self.digests)[_digest(token)] = tenant

    def add_webhook_secret(self, tenant: str, secret: object) -> None:
        """The tenant's webhook secret, or several (newest first) while rotating; refused
        (``ValueError``) unless each is ``whsec_`` + base64 of 24 to 64 bytes."""
        parts = [str(s) for s in secret] if isinstance(secret, list) else [str(secret)]
        parse_keyring(parts, f"tenant {tenant}: webhookSecret")
        self.webhook_secrets[tenant] = " ".join(parts)

    def authenticate(self, token: str, *, worker: bool = False) -> str:
        """The tenant of a bearer token (of a worker token, with ``worker``); compares
        against every digest in constant time."""
        presented = _digest(token)
        found = None
        for digest, tenant in (self.worker_digests if worker else self.digests).items():
            if hmac.compare_digest(digest, presented):
                found = tenant
        if found is None:
            raise Unauthenticated("the token is not valid")
        return found

    @classmethod
    def load(cls, spec: str = "", path: str = "", worker_spec: str = "") -> Tenants:
        """From ``tenant:token,tenant:token`` (``worker_spec``: worker tokens) and/or a JSON
        file ``{"tenants": {"acme": {"tokens": ["..."], "workerTokens": ["..."],
        "webhookSecret": "..."}}}`` (the secret may be a list, newest first, while it is
        rotated)."""
        tenants = cls()
        for text, worker in ((spec, False), (worker_spec, True)):
            for pair in filter(None, (part.strip() for part in text.split(","))):
                tenant, sep, token = pair.partition(":")
                if not sep:
                    raise ValueError("OPSTREAM_TOKENS is a list of tenant:token pairs")
                tenants.add(tenant.strip(), token.strip(), worker=worker)
        if path:
            config: dict[str, Any] = orjson.loads(Path(path).read_bytes())
            for tenant, entry in config.get("tenants", {}).items():
                for token in entry.get("tokens", []):
                    tenants.add(tenant, token)
                for token in entry.get("workerTokens", []):
                    tenants.add(tenant, token, worker=True)
                if secret := entry.get("webhookSecret"):
                    tenants.add_webhook_secret(tenant, secret)
        return tenants


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
