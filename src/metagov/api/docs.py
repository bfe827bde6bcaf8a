"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their JavaScript and CSS served by the
gateway from the installed ``fastapi-offline`` package instead of a CDN: the pages work on a
machine without internet access, and load no third-party code."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
# The pages may load nothing from another origin: ReDoc's menu links its vendor's logo from a
# CDN, which the browser then never asks for. (Inline scripts and styles are the pages' own.)
CSP = {"Content-Security-Policy": "default-src 'self' 'unsafe-inline' blob: data:"}
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def install(app: FastAPI) -> None:
    """Serve the API's documentation pages; ``app`` must be built with ``docs_url=None`` and
    ``redoc_url=None`` (FastAPI's own pages load from a CDN)."""
    assets = files("fastapi_offline").joinpath("static")
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            oauth2_redirect_url=OAUTH2_REDIRECT,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # Swagger UI would otherwise ask validator.swagger.io about the spec.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(CSP)
        return page

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    redoc_page = REDOC_PAGE.format(title=f"{app.title} API", spec=openapi_url, assets=ASSETS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(redoc_page, headers=CSP)


# FastAPI's ReDoc page without its Google fonts, and with ReDoc's loading screen hidden.
REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{assets}/favicon.png">
</head>
<body>
<redoc spec-url="{spec}" hide-loading></redoc>
<script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""
