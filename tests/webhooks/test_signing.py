"""Standard Webhooks signing and the retry schedule."""

from __future__ import annotations

import time

import pytest

from opstream.app.runtime.webhooks import backoff_ms, new_secret, parse_secret, sign, webhook_id

from .receiver import verify

# The example in the Standard Webhooks / Svix documentation.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_published_example() -> None:
    assert sign(parse_secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_verifies_with_the_reference_receiver() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    now = int(time.time())
    body = b'{"type":"operation.succeeded","data":{"lastEventSeq":7}}'
    headers = {
        "webhook-id": webhook_id("op_1", 7),
        "webhook-timestamp": str(now),
        "webhook-signature": sign(parse_secret(secret), "msg_op_1_7", now, body),
    }
    assert headers["webhook-id"] == "msg_op_1_7"
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(new_secret(), headers, body)
    assert not verify(secret, {**headers, "webhook-id": "msg_op_1_8"}, body)
    assert not verify(secret, {**headers, "webhook-timestamp": str(now + 1)}, body)


@pytest.mark.parametrize("bad", ["whsec_", "whsec_not base64!", "whsec_c2hvcnQ="])
def test_a_bad_secret_is_refused_with_one_line(bad: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_secret(bad)
    assert "\n" not in str(raised.value) and "OPSTREAM_WEBHOOK_SECRET" in str(raised.value)


def test_the_prefix_is_optional() -> None:
    assert parse_secret(SPEC_SECRET.removeprefix("whsec_")) == parse_secret(SPEC_SECRET)


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 40, 10_000])
def test_backoff_is_full_jitter_under_a_doubling_cap(attempt: int) -> None:
    ceiling = min(3600.0, 2.0 * 2 ** min(attempt - 1, 60)) * 1000
    assert backoff_ms(attempt, 2.0, 3600.0, lambda: 0.0) == 0
    assert backoff_ms(attempt, 2.0, 3600.0, lambda: 0.999999) == int(0.999999 * ceiling)
    import random

    rng = random.Random(attempt)
    for _ in range(200):
        assert 0 <= backoff_ms(attempt, 2.0, 3600.0, rng.random) <= ceiling


def test_backoff_grows_then_stops_at_the_cap() -> None:
    top = [backoff_ms(n, 2.0, 3600.0, lambda: 1.0) for n in range(1, 15)]
    assert top[:4] == [2000, 4000, 8000, 16000]
    assert max(top) == 3_600_000 and top[-1] == 3_600_000
