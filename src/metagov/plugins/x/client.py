"""X's API v2 (and its OAuth 2.0 token endpoint) over the gateway's shared httpx client.

X's failures become errors a Driver can act on: a rejected access token is
:class:`~metagov.plugins.sdk.CredentialsRejected` (the core then renews it once and retries), a
missing user or post is a 404 and other refusals a 400, each naming X's own ``detail``; a 429 is
passed on with the time left until ``x-rate-limit-reset``; an unreachable or failing X is a 502.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from metagov.plugins.sdk import (
    CredentialsRejected,
    PluginError,
    RateLimited,
    UpstreamError,
)

DEFAULT_RETRY_SECONDS = 60.0
POST_FIELDS = {
    "tweet.fields": "author_id,created_at,conversation_id,in_reply_to_user_id",
    "expansions": "author_id",
    "user.fields": "username,name",
}


class XError(PluginError):
    code = "x_error"


class XNotFound(XError):
    status_code = 404
    code = "x_not_found"


class XCredentialsRejected(CredentialsRejected):
    """X refused the access token (401). The core renews it and retries once; if X refuses
    again, the Driver gets a 400 naming X's answer: the community must authorize again."""

    status_code = 400
    code = "x_unauthorized"


class XOAuthRefused(XError):
    """X's token endpoint refused a code or a refresh token (``error``, ``error_description``)."""

    code = "x_oauth_refused"

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"X refused the authorization ({error}): {description}")
        self.error = error
        self.description = description


def retry_after(response: httpx.Response) -> float:
    """X says when its window resets (``x-rate-limit-reset``, Unix seconds)."""
    reset = response.headers.get("x-rate-limit-reset", "").strip()
    if reset.isdigit():
        return max(1.0, int(reset) - time.time())
    seconds = response.headers.get("retry-after", "").strip()
    if seconds.isdigit():
        return float(seconds)
    return DEFAULT_RETRY_SECONDS


def x_message(body: Any, response: httpx.Response | None = None) -> str:
    """X's explanation: a problem's ``detail`` (or ``title``), or its ``errors[].detail``."""
    if isinstance(body, dict):
        for key in ("detail", "title", "error_description"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])[:500]
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return str(first.get("detail") or first.get("message") or first.get("title"))[:500]
    if response is not None:
        return response.text.strip()[:300] or response.reason_phrase
    return "unknown error"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class XClient:
    """Calls as one account, with its OAuth 2.0 user access token."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, token: str) -> None:
        self._http = http
        self._api = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method, f"{self._api}{path}", params=params, json=json, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"X could not be reached: {type(exc).__name__}") from None
        body = _json(response)
        if response.status_code == 429:
            raise RateLimited(
                f"X is rate limiting {path}: {x_message(body, response)}",
                retry_after=retry_after(response),
            )
        if response.status_code == 401:
            raise XCredentialsRejected(f"X refused the access token: {x_message(body, response)}")
        if response.status_code >= 500:
            raise UpstreamError(f"X answered {response.status_code} to {method} {path}")
        if response.status_code == 404:
            raise XNotFound(f"X found nothing at {path}: {x_message(body, response)}")
        if response.status_code >= 400:
            raise XError(
                f"X refused {method} {path} ({response.status_code}): {x_message(body, response)}"
            )
        if not isinstance(body, dict):
            raise UpstreamError(f"X sent an unreadable answer to {method} {path}")
        if "data" not in body and body.get("errors"):
            # Lookups answer 200 with only errors ("Could not find user with username: …").
            raise XNotFound(x_message(body))
        return body

    async def me(self) -> dict[str, Any]:
        data = (await self.request("GET", "/2/users/me"))["data"]
        return dict(data)

    async def user_by_username(self, username: str) -> dict[str, Any]:
        data = (await self.request("GET", f"/2/users/by/username/{username}"))["data"]
        return dict(data)

    async def post(self, text: str, reply_to: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text}
        if reply_to is not None:
            body["reply"] = {"in_reply_to_tweet_id": reply_to}
        return dict((await self.request("POST", "/2/tweets", json=body))["data"])

    async def send_dm(self, participant_id: str, text: str) -> dict[str, Any]:
        path = f"/2/dm_conversations/with/{participant_id}/messages"
        return dict((await self.request("POST", path, json={"text": text}))["data"])

    async def timeline(
        self,
        path: str,
        *,
        since_id: str | None,
        start_time: str | None,
        max_results: int,
        pagination_token: str | None = None,
    ) -> dict[str, Any]:
        params = {**POST_FIELDS, "max_results": str(max_results)}
        if since_id:
            params["since_id"] = since_id
        elif start_time:
            params["start_time"] = start_time
        if pagination_token:
            params["pagination_token"] = pagination_token
        return await self.request("GET", path, params=params)


async def token_request(
    http: httpx.AsyncClient,
    api_url: str,
    form: dict[str, str],
    client_id: str,
    client_secret: str | None,
) -> dict[str, Any]:
    """``POST /2/oauth2/token``: a confidential client authenticates with HTTP Basic, a public
    one sends only its ``client_id``."""
    auth = httpx.BasicAuth(client_id, client_secret) if client_secret else None
    try:
        response = await http.post(
            f"{api_url.rstrip('/')}/2/oauth2/token",
            data={**form, "client_id": client_id},
            auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
        )
    except httpx.HTTPError as exc:
        raise UpstreamError(f"X could not be reached: {type(exc).__name__}") from None
    body = _json(response)
    if response.status_code == 429:
        raise RateLimited("X is rate limiting token requests", retry_after=retry_after(response))
    if response.status_code >= 500:
        raise UpstreamError(f"X answered {response.status_code} to a token request")
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        raise XOAuthRefused(str(error or response.status_code), x_message(body, response))
    if not isinstance(body, dict) or not body.get("access_token"):
        raise UpstreamError("X sent an unreadable token answer")
    return body


async def revoke(
    http: httpx.AsyncClient, api_url: str, token: str, client_id: str, client_secret: str | None
) -> None:
    """Give back a token we will not keep (a user login only needs to know who logged in)."""
    auth = httpx.BasicAuth(client_id, client_secret) if client_secret else None
    try:
        await http.post(
            f"{api_url.rstrip('/')}/2/oauth2/revoke",
            data={"token": token, "token_type_hint": "access_token", "client_id": client_id},
            auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
        )
    except httpx.HTTPError:
        return  # best effort: the token expires within two hours anyway
