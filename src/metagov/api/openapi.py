"""The OpenAPI document, made exact where FastAPI's own is not.

The community header is read by a dependency that answers 400 ``missing_community`` (the
original Metagov's answer) when it is absent, so FastAPI declares it optional; the document says
what the server requires, so that generated clients send it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from metagov.api.deps import COMMUNITY_HEADER

# Operations where the community header only narrows what is listed.
OPTIONAL_COMMUNITY = frozenset({"events.list"})


def install(app: FastAPI) -> None:
    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _require_community_header(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def _require_community_header(schema: dict[str, Any]) -> None:
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if (
                not isinstance(operation, dict)
                or operation.get("operationId") in OPTIONAL_COMMUNITY
            ):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == COMMUNITY_HEADER:
                    parameter["required"] = True
                    parameter["schema"] = {"type": "string", "maxLength": 64}
