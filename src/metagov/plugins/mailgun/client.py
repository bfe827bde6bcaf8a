"""Mailgun's Messages API over the gateway's shared httpx client.

Mailgun's failures become errors a Driver can act on: a refused key or message is a 400 naming
Mailgun's own message, a 429 is passed on with its ``Retry-After``, and an unreachable or failing
Mailgun is a 502. The API key goes only into the Basic authorization header, never into an error.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from metagov.plugins.sdk import PluginError, RateLimited, UpstreamError

DEFAULT_RETRY_SECONDS = 60.0


class MailgunError(PluginError):
    code = "mailgun_error"


class MailgunUnauthorized(MailgunError):
    code = "mailgun_unauthorized"


def retry_after(response: httpx.Response, default: float = DEFAULT_RETRY_SECONDS) -> float:
    """Seconds to wait, from ``Retry-After`` (seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def platform_message(response: httpx.Response) -> str:
    """Mailgun's explanation: the ``message`` of a JSON answer, or the start of a text one
    (a refused key gets the plain text ``Forbidden``)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:500]
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase or str(response.status_code)


class MailgunClient:
    def __init__(self, http: httpx.AsyncClient, api_url: str, domain: str, api_key: str) -> None:
        self._http = http
        self._url = f"{api_url.rstrip('/')}/v3/{domain}/messages"
        self._auth = httpx.BasicAuth("api", api_key)

    async def send(self, form: list[tuple[str, str]]) -> dict[str, Any]:
        try:
            response = await self._http.post(self._url, data=_as_dict(form), auth=self._auth)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Mailgun could not be reached: {type(exc).__name__}") from None
        if response.status_code == 429:
            raise RateLimited(
                f"Mailgun is rate limiting: {platform_message(response)}",
                retry_after=retry_after(response),
            )
        if response.status_code >= 500:
            raise UpstreamError(f"Mailgun answered {response.status_code}")
        if response.status_code in (401, 403):
            raise MailgunUnauthorized(
                f"Mailgun refused the API key ({response.status_code}): "
                f"{platform_message(response)}"
            )
        if response.status_code >= 400:
            raise MailgunError(
                f"Mailgun refused the message ({response.status_code}): "
                f"{platform_message(response)}"
            )
        try:
            data: dict[str, Any] = response.json()
        except ValueError:
            raise UpstreamError("Mailgun sent an unreadable answer") from None
        return data


def _as_dict(form: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """httpx sends a list value as the same field repeated (``to`` once per recipient)."""
    out: dict[str, str | list[str]] = {}
    for key, value in form:
        if key in out:
            existing = out[key]
            out[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[key] = value
    return out
