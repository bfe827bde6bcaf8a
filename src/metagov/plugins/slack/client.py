"""A small Slack Web API client over the gateway's shared httpx client.

Arguments go form-encoded (what every Web API method accepts), with nested values such as
``blocks`` JSON-encoded. Slack's failures become errors a Driver can act on: ``ok: false`` is a 400
naming Slack's error code, a 429 is retried once if Slack asks for a short wait and otherwise
passed on with its ``Retry-After``, and an unreachable or failing Slack is a 502.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from metagov.plugins.sdk import PluginContext, PluginError, RateLimited, UpstreamError

SHORT_WAIT_SECONDS = 3.0


class SlackApiError(PluginError):
    code = "slack_error"

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack API {method} failed: {error}")
        self.error = error


def _form(params: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, dict | list):
            out[key] = json.dumps(value, separators=(",", ":"))
        else:
            out[key] = str(value)
    return out


class SlackClient:
    def __init__(self, http: httpx.AsyncClient, api_url: str, token: str | None = None) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._token = token

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, auth: httpx.Auth | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token and auth is None else {}
        for attempt in (1, 2):
            try:
                response = await self._http.post(
                    f"{self._api_url}/{method}",
                    data=_form(params or {}),
                    headers=headers,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.HTTPError as exc:
                raise UpstreamError(f"Slack could not be reached: {type(exc).__name__}") from None
            if response.status_code == 429:
                wait = float(response.headers.get("retry-after", "1") or 1)
                if attempt == 1 and wait <= SHORT_WAIT_SECONDS:
                    await asyncio.sleep(wait)
                    continue
                raise RateLimited(f"Slack is rate limiting {method}", retry_after=wait)
            if response.status_code >= 500:
                raise UpstreamError(f"Slack answered {response.status_code} to {method}")
            try:
                data: dict[str, Any] = response.json()
            except ValueError:
                raise UpstreamError(f"Slack sent an unreadable answer to {method}") from None
            if not data.get("ok"):
                raise SlackApiError(method, str(data.get("error", "unknown_error")))
            return data
        raise AssertionError("unreachable")


def client_for(ctx: PluginContext[Any]) -> SlackClient:
    """A client acting as the community's bot, against the configured Web API URL."""
    return SlackClient(ctx.http, ctx.settings.api_url, ctx.config.bot_token.get_secret_value())
