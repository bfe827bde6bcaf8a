"""One error tree for the whole gateway, and the handlers that turn it into JSON.

Every error a client sees has the body ``{"detail": str, "code": str}`` (validation errors add
``errors``, naming each offending field). Services raise these; nothing below the API layer knows
about HTTP status codes except through ``status_code``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from metagov.db.engine import DatabaseError, is_unavailable

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One invalid field: where it is (``loc``) and what is wrong with it."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The JSON body of every error response."""

    detail: str
    code: str
    errors: list[FieldError] | None = None
    choices: list[dict[str, Any]] | None = None


class MetagovError(Exception):
    """Base of every error the gateway reports to a client."""

    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def body(self) -> ErrorBody:
        return ErrorBody(detail=self.detail, code=self.code)


class BadRequest(MetagovError):
    status_code = 400
    code = "bad_request"


class Unauthorized(MetagovError):
    status_code = 401
    code = "unauthorized"


class NotFound(MetagovError):
    status_code = 404
    code = "not_found"


class Conflict(MetagovError):
    status_code = 409
    code = "conflict"


class AmbiguousPlugin(Conflict):
    """More than one plugin instance could serve the request; the client must pick one."""

    code = "ambiguous_plugin"

    def __init__(self, detail: str, choices: list[dict[str, Any]] | None) -> None:
        super().__init__(detail)
        self.choices = choices

    def body(self) -> ErrorBody:
        return ErrorBody(detail=self.detail, code=self.code, choices=self.choices)


class ServiceUnavailable(MetagovError):
    """The request could not be served now, and can be sent again as it is."""

    status_code = 503
    code = "unavailable"


class PayloadTooLarge(MetagovError):
    status_code = 413
    code = "payload_too_large"


class InvalidInput(MetagovError):
    """Input failed validation; ``errors`` names every offending field."""

    status_code = 422
    code = "validation_error"

    def __init__(self, errors: Sequence[FieldError], *, detail: str | None = None) -> None:
        self.errors = list(errors)
        super().__init__(detail or summarize(self.errors))

    @classmethod
    def from_pydantic(
        cls, exc: ValidationError, *, prefix: Sequence[str | int] = ()
    ) -> InvalidInput:
        return cls(field_errors(exc.errors(), prefix=prefix))

    def body(self) -> ErrorBody:
        return ErrorBody(detail=self.detail, code=self.code, errors=self.errors)


class PluginError(MetagovError):
    """A plugin could not do what was asked; the platform or the plugin's own rules refused it.

    Plugins raise this with a message meant for the Driver. ``status_code`` defaults to 400; use
    :class:`UpstreamError` when the platform itself failed.
    """

    status_code = 400
    code = "plugin_error"


class UpstreamError(PluginError):
    """The external platform failed or could not be reached."""

    status_code = 502
    code = "upstream_error"


class RateLimited(PluginError):
    """The platform asked us to slow down; the client should retry after ``retry_after``."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def field_errors(raw: Sequence[Any], *, prefix: Sequence[str | int] = ()) -> list[FieldError]:
    """Convert pydantic's error dicts into :class:`FieldError`, prefixing each location."""
    out = []
    for err in raw:
        loc = [*prefix, *(part for part in err.get("loc", ()) if part != "__root__")]
        out.append(FieldError(loc=loc, msg=str(err.get("msg", "")), type=str(err.get("type", ""))))
    return out


def summarize(errors: Sequence[FieldError]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.loc) or "body"
        parts.append(f"{where}: {err.msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Bad request (for example a missing community header)",
        401: "Missing or invalid Driver API key",
        404: "Unknown or not yours",
        409: "Conflict (for example several plugin instances match)",
        413: "Request body too large",
        422: "Invalid input; `errors` names each field",
        429: "The platform is rate limiting; retry after `Retry-After` seconds",
        502: "The platform failed or could not be reached",
    }.items()
}


def _json(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=body.model_dump(exclude_none=True), headers=headers
    )


async def _metagov_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MetagovError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return _json(exc.status_code, exc.body(), headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = InvalidInput(field_errors(exc.errors()))
    return _json(err.status_code, err.body())


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _json(
        exc.status_code,
        ErrorBody(detail=str(exc.detail), code=code),
        dict(exc.headers) if exc.headers else None,
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _json(500, ErrorBody(detail="Internal server error", code="internal_error"))


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database that could not be reached is a 503 the client may retry as it is (the pool
    has replaced its connections by then), not a 500; any other database error is a bug."""
    if not is_unavailable(exc):
        return await _unexpected_error(request, exc)
    log.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return _json(
        503,
        ErrorBody(detail="the database is unavailable; retry shortly", code="database_unavailable"),
        {"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MetagovError, _metagov_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DatabaseError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
