"""`/docs`: Swagger UI over /openapi.json, from assets shipped in the package (swagger-ui-dist
5.35.0, Apache-2.0, see docs_static/), so it works on a machine without internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "docs_static"


def install_docs(app: FastAPI) -> None:
    app.mount("/docs-static", StaticFiles(directory=ASSETS), name="docs-static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(ASSETS / "favicon-32x32.png", media_type="image/png")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="cdcflow API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )
