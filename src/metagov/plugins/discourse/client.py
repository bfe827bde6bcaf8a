"""A small Discourse API client over the gateway's shared httpx client.

Every request carries the instance's ``Api-Key`` and ``Api-Username``. Discourse's failures
become errors a Driver can act on: its error JSON (``{"errors": [...]}``) is a 400 naming its
message (404 stays 404), a 429 is passed on with its ``Retry-After``, and an unreachable,
failing or redirecting forum is a 502. The key never appears in an error or a log line.
"""

from __future__ import annotations

from typing import Any

import httpx

from metagov.plugins.discourse.schemas import DiscourseConfig
from metagov.plugins.sdk import PluginContext, PluginError, RateLimited, UpstreamError

MAX_MESSAGE = 500


class DiscourseApiError(PluginError):
    """Discourse refused a request (a 4xx other than 429)."""

    code = "discourse_error"

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"Discourse answered {status} to {method} {path}: {message}")
        self.status = status
        self.message = message
        if status == 404:
            self.status_code = 404
            self.code = "discourse_not_found"


def error_message(response: httpx.Response) -> str:
    """Discourse's own words for a failure: its ``errors`` list, ``error``, or the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = ""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            message = "; ".join(str(e) for e in errors)
        elif isinstance(body.get("error"), str):
            message = body["error"]
    return (message or response.reason_phrase or "error")[:MAX_MESSAGE]


def _retry_after(response: httpx.Response) -> float:
    header = response.headers.get("retry-after", "")
    try:
        return max(float(header), 1.0)
    except ValueError:
        pass
    try:
        wait = response.json().get("extras", {}).get("wait_seconds")
        return max(float(wait), 1.0)
    except (ValueError, AttributeError, TypeError):
        return 1.0


class DiscourseClient:
    def __init__(
        self, http: httpx.AsyncClient, server_url: str, api_key: str, api_username: str
    ) -> None:
        self._http = http
        self.server_url = server_url.rstrip("/")
        self._headers = {
            "Api-Key": api_key,
            "Api-Username": api_username,
            "Accept": "application/json",
        }

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: dict[str, str] | None = None,
        params: dict[str, str | int] | None = None,
    ) -> Any:
        """Call ``path`` (starting with ``/``); Discourse's JSON answer, or None if empty."""
        try:
            response = await self._http.request(
                method,
                f"{self.server_url}{path}",
                json=json,
                data=data,
                params=params,
                headers=self._headers,
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"Discourse at {self.server_url} could not be reached: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if status == 429:
            raise RateLimited(
                f"Discourse is rate limiting {method} {path}: {error_message(response)}",
                retry_after=_retry_after(response),
            )
        if status >= 500:
            raise UpstreamError(f"Discourse answered {status} to {method} {path}")
        if status >= 400:
            raise DiscourseApiError(method, path, status, error_message(response))
        if status >= 300:
            raise UpstreamError(
                f"Discourse redirected {method} {path} (is server_url the forum's exact address?)"
            )
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(f"Discourse sent an unreadable answer to {method} {path}") from None

    async def get(self, path: str, *, params: dict[str, str | int] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, *, json: Any) -> Any:
        return await self.request("POST", path, json=json)

    async def put(self, path: str, *, data: dict[str, str] | None = None) -> Any:
        return await self.request("PUT", path, data=data)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    def post_url(self, post: dict[str, Any]) -> str:
        """The post's address in the forum (``/t/{slug}/{topic_id}/{post_number}``)."""
        slug = post.get("topic_slug") or "-"
        return f"{self.server_url}/t/{slug}/{post.get('topic_id')}/{post.get('post_number', 1)}"

    def topic_url(self, topic: dict[str, Any]) -> str:
        return f"{self.server_url}/t/{topic.get('slug') or '-'}/{topic.get('id')}"


def client_for(ctx: PluginContext[DiscourseConfig]) -> DiscourseClient:
    """A client acting as the instance's ``api_username`` on its forum."""
    config = ctx.config
    return DiscourseClient(
        ctx.http, config.server_url, config.api_key.get_secret_value(), config.api_username
    )
