"""The webhook opstream sends is the one ``/openapi.json`` describes (``webhooks``): a real
delivery's headers and body validate against the published description."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest
from jsonschema import Draft202012Validator

from opstream.app.http.openapi import openapi_document
from opstream.app.runtime.settings import Settings
from opstream.app.runtime.webhooks import WebhookDispatcher, new_secret
from opstream.events import model as m
from opstream.events.store import EventStore

from .fakes import FakeStore
from .receiver import Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def described_webhook() -> tuple[dict[str, Any], dict[str, Any]]:
    document = openapi_document()
    post = document["webhooks"]["operationFinished"]["post"]
    return document, post


@pytest.mark.parametrize(
    "terminal", [m.OPERATION_SUCCEEDED, m.OPERATION_FAILED, m.OPERATION_CANCELLED]
)
async def test_a_delivery_matches_its_description(receiver: Receiver, terminal: str) -> None:
    store = FakeStore()
    await store.create("op_1", "demo.countdown", {"steps": 1}, callback_url=receiver.url)
    await store.finish("op_1", terminal)
    config = Settings(webhook_secret=new_secret(), webhook_allow=("127.0.0.1",))
    assert await WebhookDispatcher(cast(EventStore, store), config).run_once() == 1
    [hit] = receiver.received

    document, post = described_webhook()
    for parameter in post["parameters"]:
        value = hit.headers[parameter["name"]]
        assert re.search(parameter["schema"]["pattern"], value), (parameter["name"], value)
    body_schema = post["requestBody"]["content"]["application/json"]["schema"]
    # The body's $refs point into the document's components: validate within the document.
    validator = Draft202012Validator({**body_schema, "components": document["components"]})
    errors = [error.message for error in validator.iter_errors(orjson.loads(hit.body))]
    assert errors == []
