"""The OpenAPI document describes every route the application serves, by its conventions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.routing import Mount, Route

from opstream.app.http.application import ROUTES, create_app
from opstream.app.http.openapi import openapi_document
from opstream.app.runtime.settings import Settings

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# Those that never ask for credentials (the guard in the command line is about the others).
PUBLIC = {"getDashboard", "getHealth", "getReadiness", "getMetrics", "getOpenApi", "getApiDocs"}


def operations(paths: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in paths.items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        section, kind, name = node["$ref"].removeprefix("#/").split("/")
        node = document[section][kind][name]
    return node


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


def test_every_operation_has_a_unique_operation_id_and_a_declared_tag() -> None:
    document = openapi_document()
    declared = {tag["name"] for tag in document["tags"]}
    ids = []
    for path, method, operation in operations(document["paths"]):
        label = f"{method.upper()} {path}"
        assert re.fullmatch(r"[a-z][A-Za-z]+", operation.get("operationId", "")), label
        assert operation.get("tags"), label
        assert set(operation["tags"]) <= declared, label
        ids.append(operation["operationId"])
    for _, _, webhook in operations(document["webhooks"]):
        ids.append(webhook["operationId"])
        assert set(webhook["tags"]) <= declared
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_the_protocol_level_400_is_documented_everywhere() -> None:
    """uvicorn answers a request it cannot parse with a text/plain 400 of its own."""
    document = openapi_document()
    for path, method, operation in operations(document["paths"]):
        bad_request = resolve(document, operation["responses"]["400"])
        assert "text/plain" in bad_request["content"], f"{method} {path}"
        assert "application/problem+json" in bad_request["content"], f"{method} {path}"


def test_credentials_and_limits_are_documented_where_they_apply() -> None:
    document = openapi_document()
    for path, method, operation in operations(document["paths"]):
        label = f"{method.upper()} {path}"
        responses = operation["responses"]
        if operation["operationId"] in PUBLIC:
            assert operation["security"] == [], label
            assert "401" not in responses, label
        else:
            unauthenticated = resolve(document, responses["401"])
            assert "WWW-Authenticate" in unauthenticated["headers"], label
    paths = document["paths"]
    limited = [
        paths["/operations"]["post"],
        paths["/operations/{operation_id}"]["get"],
        paths["/operations/{operation_id}/events/stream"]["get"],
        paths["/events/stream"]["get"],
    ]
    for operation in limited:
        too_many = resolve(document, operation["responses"]["429"])
        assert "Retry-After" in too_many["headers"], operation["operationId"]
    for feed in (paths["/events"]["get"], paths["/events/stream"]["get"]):
        assert "403" in feed["responses"]


def test_the_headers_clients_rely_on_are_documented() -> None:
    paths = openapi_document()["paths"]
    created = paths["/operations"]["post"]["responses"]["202"]["headers"]
    assert {"Location", "ETag", "Retry-After", "Idempotent-Replayed"} <= set(created)
    status = paths["/operations/{operation_id}"]["get"]["responses"]
    assert {"ETag", "Retry-After"} <= set(status["200"]["headers"])
    assert {"Location", "ETag"} <= set(status["303"]["headers"])
    assert "ETag" in status["304"]["headers"]
    for replay in ("/operations/{operation_id}/events", "/events"):
        assert "Link" in paths[replay]["get"]["responses"]["200"]["headers"]


def test_references_resolve() -> None:
    document = openapi_document()
    text = str(document)
    for ref in set(re.findall(r"'\$ref': '([^']+)'", text)):
        section, kind, name = ref.removeprefix("#/").split("/")
        assert name in document[section][kind], ref
    assert document["openapi"] == "3.1.0"


def test_the_webhook_is_described_with_standard_webhooks_headers() -> None:
    webhook = openapi_document()["webhooks"]["operationFinished"]["post"]
    headers = {p["name"] for p in webhook["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    body = webhook["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["type", "timestamp", "data"]


async def test_mounted_under_a_prefix_the_document_names_it_as_its_server(
    tmp_path: Path,
) -> None:
    """Swagger UI and generated clients send requests to ``servers``: under a mount path
    (ASGI ``root_path``), that is where the API is."""
    app = create_app(Settings(database=f"sqlite:///{tmp_path / 'o.db'}", concurrency=0))
    async with app.router.lifespan_context(app):
        for root_path, servers in (("/lro", [{"url": "/lro"}]), ("", None)):
            transport = httpx.ASGITransport(app=app, root_path=root_path)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                document = (await client.get(f"{root_path}/openapi.json")).json()
            assert document.get("servers") == servers
