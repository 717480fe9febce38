"""``/kinds``: the kinds registry in the store, listed and registered over HTTP.

``PUT /kinds/{name}`` lets a team that does not write Python (its workers speak the HTTP
protocol) register a kind's schema and policy; any API server then validates new
operations against it. ``GET /kinds`` lists every kind with its live worker count.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from opstream.app.http import inputs
from opstream.app.http.leases import client_or_worker
from opstream.app.http.operations import json_response
from opstream.app.http.problems import InvalidParams
from opstream.app.http.services import caller, services
from opstream.app.runtime.catalog import InvalidKind, kind_record


async def list_kinds(request: Request) -> Response:
    caller(request)
    kinds = await services(request).kinds().list()
    return json_response({"items": [kind.to_dict() for kind in kinds]})


async def put_kind(request: Request) -> Response:
    client_or_worker(request)  # a worker registers the kinds it serves
    svc = services(request)
    name = request.path_params["name"]
    body = await inputs.json_body(request, svc.settings.max_body_bytes)
    try:
        record = kind_record(name, body)
    except InvalidKind as exc:
        pointer = "" if exc.field in ("body", "name") else f"/{exc.field}"
        error = {"field": exc.field, "pointer": pointer, "message": str(exc)}
        raise InvalidParams(str(exc), errors=[error]) from None
    catalog = svc.kinds()
    created = await catalog.put(record)
    stored = await catalog.find(name)
    document = (stored.record if stored is not None else record).to_dict()
    headers = {"Location": f"/kinds/{name}"} if created else None
    return json_response(document, 201 if created else 200, headers)


__all__ = ["list_kinds", "put_kind"]
