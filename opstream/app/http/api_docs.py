"""``GET /docs``: the OpenAPI description, browsable, with Swagger UI from a Python package.

These machines (and many deployments) cannot reach a CDN, so the UI's files come from the
installed ``flask-swagger-ui`` distribution: it repackages each Swagger UI release within
days (5.x reads OpenAPI 3.1). Only its ``dist`` folder of static files is used; the package
is located, never imported, so Flask is never loaded. Every URL on the page is relative, so
it works under a mount path too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

UI_PACKAGE = "flask_swagger_ui"
ASSETS_PATH = "/docs/assets"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>opstream API</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script src="static/js/api-docs.js"></script>
</body>
</html>
"""


def swagger_ui_dir() -> Path | None:
    """The folder of Swagger UI's files in the installed package, or ``None``."""
    spec = importlib.util.find_spec(UI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        dist = Path(location) / "dist"
        if (dist / "swagger-ui-bundle.js").is_file():
            return dist
    return None


async def docs_page(request: Request) -> Response:
    if swagger_ui_dir() is None:
        raise HTTPException(404, f"/docs needs the {UI_PACKAGE} package; /openapi.json is here")
    # The page links its assets relative to itself: "/docs" (no trailing slash) keeps them
    # under the same prefix whatever the mount path.
    return Response(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})


def assets_mount() -> Mount:
    """Swagger UI's files at ``/docs/assets`` (an empty mount when the package is absent)."""
    directory = swagger_ui_dir()
    if directory is None:
        return Mount(ASSETS_PATH, routes=[])
    return Mount(ASSETS_PATH, StaticFiles(directory=directory), name="api-docs-assets")
