"""Standard Webhooks signing: the secrets, the signature and the headers' identifiers.

Kept apart from the dispatcher (and free of opstream imports) so that settings and the
tenants file can refuse an unusable secret when they are read, before anything starts.

A secret is ``whsec_`` + base64 of 24 to 64 random bytes (the specification's range for
HMAC-SHA256 keys). A *keyring* is several secrets, newest first, separated by spaces or
commas: every webhook is signed with each of them and the signatures are sent together
(``webhook-signature: v1,<new> v1,<old>``), so a secret can be rotated with no downtime —
receivers move to the new secret at their pace, then the old one is dropped from the
configuration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
MAX_KEYS = 8  # a rollover needs two; more than a handful is a mistake
NEW_SECRET_BYTES = 32
_SEPARATORS = re.compile(r"[\s,]+")  # neither can occur in base64


def parse_secret(text: str, source: str = "OPSTREAM_WEBHOOK_SECRET") -> bytes:
    """The key bytes of one ``whsec_<base64>`` secret (the prefix is optional).

    Raises ``ValueError`` (one line, naming ``source``) for anything but base64 of 24 to 64
    bytes."""
    raw = text.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise ValueError(f"{source} must be whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{source} is too short ({len(key)} bytes): Standard Webhooks secrets are "
            f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes (whsec_ + base64 of "
            "os.urandom(32) makes one)"
        )
    if len(key) > MAX_SECRET_BYTES:
        raise ValueError(
            f"{source} is too long ({len(key)} bytes): Standard Webhooks secrets are "
            f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes"
        )
    return key


def parse_keyring(
    text: str | Sequence[str], source: str = "OPSTREAM_WEBHOOK_SECRET"
) -> list[bytes]:
    """The keys of one or more secrets, newest first: a string with the secrets separated
    by spaces or commas, or a list of them. Raises ``ValueError`` as ``parse_secret``."""
    parts = [text] if isinstance(text, str) else list(text)
    secrets_ = [s for part in parts for s in _SEPARATORS.split(part.strip()) if s]
    if not secrets_:
        raise ValueError(f"{source} is empty")
    if len(secrets_) > MAX_KEYS:
        raise ValueError(f"{source} has {len(secrets_)} secrets: at most {MAX_KEYS}")
    return [parse_secret(s, source) for s in secrets_]


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature: ``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per key, space-separated."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def webhook_id(operation_id: str, terminal_seq: int) -> str:
    """The ``webhook-id``: the same for every attempt, so receivers can deduplicate."""
    return f"msg_{operation_id}_{terminal_seq}"
