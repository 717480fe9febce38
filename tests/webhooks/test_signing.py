"""Standard Webhooks signing: secrets (24 to 64 bytes, refused otherwise wherever they are
read), signatures, and rotation with several signatures in one header."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from opstream.app.runtime.settings import Settings
from opstream.app.runtime.signing import (
    new_secret,
    parse_keyring,
    parse_secret,
    sign,
    signature_header,
    webhook_id,
)
from opstream.app.runtime.tenants import Tenants

from .receiver import verify

# The example in the Standard Webhooks / Svix documentation (a 24-byte secret).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def secret_of(size: int) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def signed_headers(secrets: list[str], body: bytes, msg_id: str = "msg_op_1_7") -> dict[str, str]:
    now = int(time.time())
    keys = [parse_secret(s) for s in secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header(keys, msg_id, now, body),
    }


def test_signature_matches_the_published_example() -> None:
    assert sign(parse_secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_verifies_with_the_reference_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(parse_secret(secret)) == 32
    body = b'{"type":"operation.succeeded","data":{"lastEventSeq":7}}'
    headers = signed_headers([secret], body, webhook_id("op_1", 7))
    assert headers["webhook-id"] == "msg_op_1_7"
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(new_secret(), headers, body)
    assert not verify(secret, {**headers, "webhook-id": "msg_op_1_8"}, body)
    later = str(int(headers["webhook-timestamp"]) + 1)
    assert not verify(secret, {**headers, "webhook-timestamp": later}, body)


def test_during_a_rollover_both_secrets_verify_and_no_other() -> None:
    new, old = new_secret(), new_secret()
    body = orjson.dumps({"type": "operation.succeeded"})
    headers = signed_headers([new, old], body)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert verify(new, headers, body), "receivers already on the new secret"
    assert verify(old, headers, body), "receivers still on the old secret"
    assert not verify(new_secret(), headers, body)


@pytest.mark.parametrize(
    "bad",
    ["whsec_", "whsec_not base64!", "whsec_c2hvcnQ=", secret_of(16), secret_of(23), secret_of(65)],
)
def test_a_bad_secret_is_refused_with_one_line(bad: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_secret(bad)
    assert "\n" not in str(raised.value) and "OPSTREAM_WEBHOOK_SECRET" in str(raised.value)


def test_a_short_secret_says_what_is_needed() -> None:
    with pytest.raises(ValueError, match=r"too short \(16 bytes\).*24 to 64 random bytes"):
        parse_secret(secret_of(16))


@pytest.mark.parametrize("size", [24, 32, 64])
def test_secrets_of_24_to_64_bytes_are_taken(size: int) -> None:
    assert len(parse_secret(secret_of(size))) == size


def test_the_prefix_is_optional() -> None:
    assert parse_secret(SPEC_SECRET.removeprefix("whsec_")) == parse_secret(SPEC_SECRET)


def test_a_keyring_is_newest_first_separated_by_spaces_or_commas_or_a_list() -> None:
    new, old = new_secret(), new_secret()
    keys = [parse_secret(new), parse_secret(old)]
    assert parse_keyring(f"{new} {old}") == keys
    assert parse_keyring(f" {new},{old} ") == keys
    assert parse_keyring([new, old]) == keys
    with pytest.raises(ValueError, match="is empty"):
        parse_keyring(" , ")
    with pytest.raises(ValueError, match="too short"):
        parse_keyring(f"{new} {secret_of(16)}")


def test_settings_refuse_a_short_secret_at_start() -> None:
    with pytest.raises(ValueError, match="OPSTREAM_WEBHOOK_SECRET is too short"):
        Settings.from_env({"OPSTREAM_WEBHOOK_SECRET": secret_of(16)})
    rotating = f"{new_secret()} {new_secret()}"
    assert Settings.from_env({"OPSTREAM_WEBHOOK_SECRET": rotating}).webhook_secret == rotating


def test_a_tenants_short_secret_is_refused_naming_the_tenant(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    token = "t" * 32
    path.write_bytes(
        orjson.dumps({"tenants": {"acme": {"tokens": [token], "webhookSecret": secret_of(16)}}})
    )
    with pytest.raises(ValueError, match="tenant acme: webhookSecret is too short"):
        Tenants.load(path=str(path))


def test_a_tenant_may_rotate_with_a_list_of_secrets(tmp_path: Path) -> None:
    new, old = new_secret(), new_secret()
    path = tmp_path / "tenants.json"
    entry = {"tokens": ["t" * 32], "webhookSecret": [new, old]}
    path.write_bytes(orjson.dumps({"tenants": {"acme": entry}}))
    tenants = Tenants.load(path=str(path))
    assert parse_keyring(tenants.webhook_secrets["acme"]) == [parse_secret(new), parse_secret(old)]


@pytest.mark.parametrize("where", ["environment", "tokens file"])
def test_serve_refuses_to_start_with_a_short_secret(tmp_path: Path, where: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSTREAM_")}
    env["OPSTREAM_DATABASE"] = f"sqlite:///{tmp_path / 'x.db'}"
    if where == "environment":
        env["OPSTREAM_WEBHOOK_SECRET"] = secret_of(16)
        expected = "OPSTREAM_WEBHOOK_SECRET is too short (16 bytes)"
    else:
        path = tmp_path / "tenants.json"
        entry = {"tokens": ["t" * 32], "webhookSecret": secret_of(16)}
        path.write_bytes(orjson.dumps({"tenants": {"acme": entry}}))
        env["OPSTREAM_TOKENS_FILE"] = str(path)
        expected = "tenant acme: webhookSecret is too short (16 bytes)"
    done = subprocess.run(
        [sys.executable, "-m", "opstream.app.cli.main", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert expected in line


def test_the_docs_verifier_accepts_a_rollover() -> None:
    """docs/webhooks.md's verify-by-hand snippet, run on a webhook with two signatures."""
    text = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    [snippet] = [
        block.split("\n", 1)[1]
        for block in text.split("```")
        if block.startswith("python") and "def verify" in block
    ]
    namespace: dict[str, object] = {}
    exec(snippet, namespace)
    docs_verify = namespace["verify"]
    assert callable(docs_verify)
    new, old = new_secret(), new_secret()
    body = b'{"type":"operation.succeeded"}'
    headers = signed_headers([new, old], body)
    assert docs_verify(new, headers, body) and docs_verify(old, headers, body)
    assert not docs_verify(new_secret(), headers, body)
