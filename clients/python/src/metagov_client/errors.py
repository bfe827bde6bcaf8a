"""Exceptions: one per kind of gateway answer, each carrying the gateway's machine-readable
``code``, so a Driver branches on ``err.code == "slug_taken"`` rather than on message text.

Every error body from the gateway is ``{"detail": str, "code": str}``; a 422 adds ``errors``
(one per invalid field) and a 409 ``ambiguous_plugin`` adds ``choices``. Network failures are not
wrapped: they surface as ``httpx.TransportError``, since retrying them safely depends on whether
the request had effects, which only the caller knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from metagov_client.models import Process


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field of a 422: where it is (``loc``, e.g. ``["body", "parameters", "low"]``),
    what is wrong (``msg``) and pydantic's error ``type``."""

    loc: list[str | int]
    msg: str
    type: str


class MetagovError(Exception):
    """The gateway answered with an error status."""

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        choices: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(f"{status_code} {code}: {detail}")
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.errors = errors or []
        self.choices = choices or []
        self.retry_after = retry_after
        self.method = method
        self.url = url


class BadRequestError(MetagovError):
    """400: e.g. ``missing_community``, ``plugin_error`` (a plugin refused the request)."""


class AuthenticationError(MetagovError):
    """401 ``unauthorized``: the API key is missing, wrong or revoked."""


class NotFoundError(MetagovError):
    """404: ``unknown_community``, ``unknown_plugin``, ``plugin_not_enabled``, ``not_found``.
    Another Driver's community is also "not found"."""


class ConflictError(MetagovError):
    """409: ``slug_taken``, ``conflict``, ``invalid_transition`` (the process has ended), or
    ``ambiguous_plugin`` (several instances match; ``choices`` lists them)."""


class PayloadTooLargeError(MetagovError):
    """413 ``payload_too_large``."""


class InvalidInputError(MetagovError):
    """422 ``validation_error``; ``errors`` names each invalid field."""


class RateLimitedError(MetagovError):
    """429 ``rate_limited``, after the client's retries; ``retry_after`` says when to try again."""


class ServerError(MetagovError):
    """5xx: ``internal_error`` (a gateway bug) or another server-side failure."""


class UpstreamError(ServerError):
    """502 ``upstream_error``: the platform failed or could not be reached."""


class UnavailableError(ServerError):
    """503, after the client's retries; ``retry_after`` says when to try again."""


_BY_STATUS: dict[int, type[MetagovError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    429: RateLimitedError,
    502: UpstreamError,
    503: UnavailableError,
}


def error_from_response(response: httpx.Response, retry_after: float | None = None) -> MetagovError:
    """The exception for an error response. A body that is not the gateway's error JSON (a proxy's
    HTML page, say) still gives an exception, with code ``http_error`` and the text as detail."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text[:500] or response.reason_phrase, "code": "http_error"}
    errors = [
        FieldError(
            loc=list(e.get("loc") or []), msg=str(e.get("msg", "")), type=str(e.get("type", ""))
        )
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else MetagovError)
    return cls(
        status,
        str(body.get("code") or "http_error"),
        str(body.get("detail") or ""),
        errors=errors,
        choices=list(body.get("choices") or []),
        retry_after=retry_after,
        method=response.request.method,
        url=str(response.request.url),
    )


class ProcessTimeoutError(TimeoutError):
    """:meth:`wait_for_outcome` gave up; ``process`` is the record as last read (still open)."""

    def __init__(self, process: Process, timeout: float) -> None:
        super().__init__(
            f"process {process.name}/{process.id} still {process.status} after {timeout:g} s"
        )
        self.process = process


class WebhookVerificationError(ValueError):
    """A delivery failed verification: answer it with 401. ``reason`` is one of
    ``missing_headers``, ``bad_timestamp``, ``stale_timestamp``, ``bad_signature``,
    ``bad_body`` (not a JSON event envelope) or ``id_mismatch`` (the envelope's ``id`` is not the
    signed ``webhook-id``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook verification failed: {reason}")
        self.reason = reason
