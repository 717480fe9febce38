"""The OpenAPI document describes every route the application serves."""

from __future__ import annotations

from starlette.routing import Mount, Route

from opstream.app.http.application import ROUTES
from opstream.app.http.openapi import openapi_document


def test_every_route_and_method_is_described() -> None:
    paths = openapi_document()["paths"]
    missing = []
    for route in ROUTES:
        if isinstance(route, Mount):
            continue  # static files
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method == "HEAD":
                continue
            if method.lower() not in paths.get(route.path, {}):
                missing.append(f"{method} {route.path}")
    assert missing == []


def test_nothing_is_described_that_does_not_exist() -> None:
    served = {route.path for route in ROUTES if isinstance(route, Route)}
    assert set(openapi_document()["paths"]) <= served


def test_references_resolve() -> None:
    document = openapi_document()
    text = str(document)
    for name in ("Problem", "Event", "Operation", "NewOperation"):
        assert name in document["components"]["schemas"]
    assert "#/components/responses/Problem" in text
    assert document["openapi"] == "3.1.0"
