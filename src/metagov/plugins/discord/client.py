"""A small Discord REST client over the gateway's shared httpx client.

Requests go as the application's bot (``Authorization: Bot …``), or, for an interaction's
follow-up webhook, with the interaction's token in the URL and no credentials. Discord's failures
become errors a Driver can act on: a JSON error (``{"code": 10003, "message": "Unknown
Channel"}``) is a 400 naming Discord's code and message; a 429 is waited out once when Discord asks
for a short wait and otherwise passed on with its ``retry_after`` (and remembered, so the limited
route, or every route after a global limit, is refused without asking Discord again); an
unreachable or failing Discord is a 502. The bot token and interaction tokens never appear in an
error or a log line.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx

from metagov.plugins.discord.ratelimits import RateGate, route_key
from metagov.plugins.discord.schemas import DiscordSettings
from metagov.plugins.sdk import PluginError, RateLimited, UpstreamError

SHORT_WAIT_SECONDS = 1.0
USER_AGENT = "DiscordBot (https://github.com/metagov/gateway, 0.1)"
# Discord's JSON error codes meaning an interaction's token no longer works.
EXPIRED_INTERACTION = frozenset({10015, 50027})


class DiscordApiError(PluginError):
    """Discord refused a request: ``status`` is the HTTP status, ``discord_code`` Discord's JSON
    error code (0 when it sent none)."""

    code = "discord_error"

    def __init__(self, label: str, status: int, discord_code: int, message: str) -> None:
        super().__init__(
            f"Discord refused {label}: {message} (Discord error {discord_code}, HTTP {status})"
        )
        self.status = status
        self.discord_code = discord_code
        self.message = message
        if status == 401:
            # The gateway's own credentials were refused: nothing the Driver can fix.
            self.status_code = 502
            self.code = "discord_unauthorized"


class DiscordClient:
    def __init__(self, http: httpx.AsyncClient, settings: DiscordSettings) -> None:
        self._http = http
        self._api_url = settings.api_url.rstrip("/")
        self._token = settings.bot_token
        self._gate: RateGate = settings.gate

    async def bot(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Call ``path`` as the bot; returns Discord's JSON (None for 204)."""
        if self._token is None:
            raise PluginError(
                "the Discord bot is not configured (METAGOV_DISCORD__BOT_TOKEN)",
                code="discord_not_configured",
            )
        headers = {"Authorization": f"Bot {self._token.get_secret_value()}"}
        return await self._request(
            method, path, f"{method} {path}", json=json, params=params, headers=headers, bot=True
        )

    async def interaction(
        self, method: str, application_id: str, token: str, suffix: str = "", *, json: Any = None
    ) -> Any:
        """Call an interaction's follow-up webhook (``/webhooks/{application}/{token}…``), which
        needs no bot token and is not under the bot's global rate limit."""
        path = f"/webhooks/{application_id}/{token}{suffix}"
        label = f"{method} /webhooks/{application_id}/{{token}}{suffix}"
        return await self._request(method, path, label, json=json, headers={}, bot=False)

    async def oauth_token(self, form: dict[str, str], auth: httpx.Auth) -> dict[str, Any]:
        """Exchange an authorization code (``POST /oauth2/token``)."""
        try:
            response = await self._http.post(
                f"{self._api_url}/oauth2/token",
                data=form,
                auth=auth,
                headers={"User-Agent": USER_AGENT},
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Discord could not be reached: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise UpstreamError(f"Discord answered {response.status_code} to POST /oauth2/token")
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError("Discord sent an unreadable answer to POST /oauth2/token") from None
        if not isinstance(data, dict):
            raise UpstreamError("Discord sent an unreadable answer to POST /oauth2/token")
        if response.status_code >= 400:
            raise OAuthRefused(str(data.get("error", "invalid_request")))
        return data

    async def as_user(self, path: str, access_token: str) -> Any:
        """GET ``path`` with a user's OAuth access token."""
        headers = {"Authorization": f"Bearer {access_token}"}
        return await self._request("GET", path, f"GET {path}", headers=headers, bot=False)

    async def _request(
        self,
        method: str,
        path: str,
        label: str,
        *,
        headers: dict[str, str],
        bot: bool,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        key = route_key(method, path)
        for attempt in (1, 2):
            wait, is_global = self._gate.wait_for(key, bot=bot)
            if wait > 0:
                raise _limited(label, wait, is_global)
            try:
                response = await self._http.request(
                    method,
                    f"{self._api_url}{path}",
                    json=json,
                    params=params,
                    headers={**headers, "User-Agent": USER_AGENT},
                )
            except httpx.HTTPError as exc:
                raise UpstreamError(
                    f"Discord could not be reached for {label}: {type(exc).__name__}"
                ) from None
            if response.status_code == 429:
                wait, is_global = _retry_after(response)
                self._gate.limited(key, wait, is_global=is_global and bot)
                if attempt == 1 and wait <= SHORT_WAIT_SECONDS:
                    await asyncio.sleep(wait)
                    continue
                raise _limited(label, wait, is_global)
            if response.status_code >= 500:
                raise UpstreamError(f"Discord answered {response.status_code} to {label}")
            if response.status_code == 204 or not response.content:
                if response.status_code >= 400:
                    raise DiscordApiError(label, response.status_code, 0, "no details")
                return None
            try:
                data = response.json()
            except ValueError:
                raise UpstreamError(f"Discord sent an unreadable answer to {label}") from None
            if response.status_code >= 400:
                body = data if isinstance(data, dict) else {}
                raise DiscordApiError(
                    label,
                    response.status_code,
                    _int(body.get("code")),
                    str(body.get("message") or "no details")[:300],
                )
            return data
        raise AssertionError("unreachable")


class OAuthRefused(Exception):
    """Discord refused an OAuth code exchange; ``error`` is its OAuth error code."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _retry_after(response: httpx.Response) -> tuple[float, bool]:
    """How long Discord asks to wait, and whether the limit is the bot's global one: from the
    body's ``retry_after`` and ``global`` (seconds, with decimals), else from the headers."""
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    wait: float | None = None
    try:
        wait = float(body["retry_after"])
    except (KeyError, TypeError, ValueError):
        try:
            wait = float(response.headers.get("retry-after", ""))
        except ValueError:
            wait = None
    if wait is None or not math.isfinite(wait) or wait < 0:
        wait = 1.0
    is_global = bool(body.get("global")) or (
        response.headers.get("x-ratelimit-global", "").lower() == "true"
        or response.headers.get("x-ratelimit-scope", "") == "global"
    )
    return wait, is_global


def _limited(label: str, wait: float, is_global: bool) -> RateLimited:
    what = "the bot (global limit)" if is_global else label
    return RateLimited(
        f"Discord is rate limiting {what}; retry after {wait:.2f} s", retry_after=wait
    )


def client_for(http: httpx.AsyncClient, settings: Any) -> DiscordClient:
    assert isinstance(settings, DiscordSettings)
    return DiscordClient(http, settings)
