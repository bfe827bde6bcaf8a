"""SendGrid's v3 Mail Send API over the gateway's shared httpx client.

SendGrid's failures become errors a Driver can act on: a refused key or message is a 400 naming
SendGrid's own messages (``errors[].message``, with the field they concern), a 429 is passed on
with the wait SendGrid asks for, and an unreachable or failing SendGrid is a 502. The API key goes
only into the Authorization header, never into an error.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from metagov.plugins.sdk import PluginError, RateLimited, UpstreamError

DEFAULT_RETRY_SECONDS = 60.0


class SendGridError(PluginError):
    code = "sendgrid_error"


class SendGridUnauthorized(SendGridError):
    code = "sendgrid_unauthorized"


def retry_after(response: httpx.Response) -> float:
    """SendGrid's 429 carries ``X-RateLimit-Reset``, the Unix time the limit resets at (and
    sometimes ``Retry-After`` in seconds)."""
    seconds = response.headers.get("retry-after", "").strip()
    if seconds.isdigit():
        return float(seconds)
    reset = response.headers.get("x-ratelimit-reset", "").strip()
    if reset.isdigit():
        return max(1.0, int(reset) - time.time())
    return DEFAULT_RETRY_SECONDS


def platform_message(response: httpx.Response) -> str:
    """``errors[].message`` (with ``field`` when SendGrid names one), joined."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        parts = []
        for error in errors[:5]:
            if not isinstance(error, dict):
                continue
            message = str(error.get("message", "")).strip()
            field = error.get("field")
            parts.append(f"{field}: {message}" if field else message)
        if any(parts):
            return "; ".join(p for p in parts if p)[:500]
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase or str(response.status_code)


class SendGridClient:
    def __init__(self, http: httpx.AsyncClient, api_url: str, api_key: str) -> None:
        self._http = http
        self._url = f"{api_url.rstrip('/')}/v3/mail/send"
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def send(self, message: dict[str, Any]) -> str | None:
        """Queue ``message``; returns SendGrid's ``X-Message-Id``."""
        try:
            response = await self._http.post(self._url, json=message, headers=self._headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"SendGrid could not be reached: {type(exc).__name__}") from None
        if response.status_code == 429:
            raise RateLimited(
                f"SendGrid is rate limiting: {platform_message(response)}",
                retry_after=retry_after(response),
            )
        if response.status_code >= 500:
            raise UpstreamError(f"SendGrid answered {response.status_code}")
        if response.status_code in (401, 403):
            raise SendGridUnauthorized(
                f"SendGrid refused the request ({response.status_code}): "
                f"{platform_message(response)}"
            )
        if response.status_code >= 400:
            raise SendGridError(
                f"SendGrid refused the message ({response.status_code}): "
                f"{platform_message(response)}"
            )
        message_id: str | None = response.headers.get("x-message-id")
        return message_id
