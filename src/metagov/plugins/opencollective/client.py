"""Open Collective's GraphQL API v2 and its OAuth token endpoint, over the gateway's shared httpx
client.

A personal token goes in the ``Personal-Token`` header, an OAuth token in ``Authorization:
Bearer``. Open Collective answers GraphQL errors with 200 and an ``errors`` list: those become a
400 naming its messages, an unauthenticated request a :class:`CredentialsRejected` (the core then
refreshes an OAuth token once and retries), a 429 a 429 with its ``Retry-After``, and a failing
or unreachable API a 502.
"""

from __future__ import annotations

from typing import Any

import httpx

from metagov.plugins.opencollective.schemas import OpenCollectiveConfig
from metagov.plugins.sdk import (
    CredentialsRejected,
    PluginContext,
    PluginError,
    RateLimited,
    UpstreamError,
)

UNAUTHENTICATED = {"Unauthorized", "UNAUTHENTICATED"}
OAUTH = "oauth"  # token_type of tokens the OAuth install obtained


class OpenCollectiveApiError(PluginError):
    """Open Collective refused a query; the message names what it said."""

    code = "opencollective_error"

    def __init__(self, detail: str, *, codes: frozenset[str] = frozenset()) -> None:
        super().__init__(detail)
        self.codes = codes


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", "60"))
    except ValueError:
        return 60.0


class OpenCollectiveClient:
    def __init__(
        self, http: httpx.AsyncClient, api_url: str, token: str, *, token_type: str
    ) -> None:
        self._http = http
        self._url = f"{api_url.rstrip('/')}/graphql/v2"
        if token_type == OAUTH:
            self._headers = {"Authorization": f"Bearer {token}"}
        else:
            self._headers = {"Personal-Token": token}
        self._oauth = token_type == OAUTH

    async def run(self, document: str, variables: dict[str, Any], what: str) -> dict[str, Any]:
        """Run one query or mutation; returns its ``data``."""
        try:
            response = await self._http.post(
                self._url, json={"query": document, "variables": variables}, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"Open Collective could not be reached: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if status == 429:
            raise RateLimited(
                f"Open Collective is rate limiting {what}", retry_after=_retry_after(response)
            )
        if status >= 500:
            raise UpstreamError(f"Open Collective answered {status} to {what}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if status == 401:
            self._rejected(what)
        if not isinstance(body, dict):
            raise UpstreamError(f"Open Collective sent an unreadable answer to {what}")
        errors = body.get("errors")
        if errors:
            messages = [str(e.get("message", "")) for e in errors if isinstance(e, dict)]
            codes = frozenset(
                str((e.get("extensions") or {}).get("code", ""))
                for e in errors
                if isinstance(e, dict)
            )
            if codes & UNAUTHENTICATED and body.get("data") is None:
                self._rejected(what)
            raise OpenCollectiveApiError(
                f"Open Collective refused {what}: {'; '.join(messages)[:500]}", codes=codes
            )
        if status >= 400:
            raise OpenCollectiveApiError(f"Open Collective refused {what} (HTTP {status})")
        data = body.get("data")
        if not isinstance(data, dict):
            raise UpstreamError(f"Open Collective sent no data for {what}")
        return data

    def _rejected(self, what: str) -> None:
        if self._oauth:
            raise CredentialsRejected(f"Open Collective rejected the access token for {what}")
        raise OpenCollectiveApiError(
            f"Open Collective rejected the personal token for {what}; check that it exists "
            "and has not expired"
        )


def client_for(ctx: PluginContext[OpenCollectiveConfig]) -> OpenCollectiveClient:
    return OpenCollectiveClient(
        ctx.http,
        ctx.settings.api_url,
        ctx.config.access_token.get_secret_value(),
        token_type=ctx.config.token_type,
    )


async def request_token(
    http: httpx.AsyncClient, token_url: str, form: dict[str, str]
) -> dict[str, Any]:
    """POST an OAuth grant to Open Collective's token endpoint; returns its JSON answer.
    A refused grant is an :class:`OpenCollectiveApiError` naming Open Collective's error code."""
    try:
        response = await http.post(token_url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise UpstreamError(f"Open Collective could not be reached: {type(exc).__name__}") from None
    if response.status_code == 429:
        raise RateLimited("Open Collective is rate limiting", retry_after=_retry_after(response))
    if response.status_code >= 500:
        raise UpstreamError(f"Open Collective answered {response.status_code} to the token grant")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamError("Open Collective sent an unreadable answer to the token grant")
    if response.status_code >= 400 or not body.get("access_token"):
        error = str(body.get("error") or "invalid_grant")
        raise OpenCollectiveApiError(
            f"Open Collective refused the grant: {error}", codes=frozenset({error})
        )
    return body
