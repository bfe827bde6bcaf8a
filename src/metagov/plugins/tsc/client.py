"""Reading records from a TSC server over the gateway's shared httpx client.

A record the server does not have is a 404 naming the kind and the id; other refusals are 400s
naming the server's message, a 429 is passed on with its ``Retry-After``, and an unreachable or
failing server is a 502.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from metagov.plugins.sdk import PluginError, RateLimited, UpstreamError

DEFAULT_RETRY_SECONDS = 60.0


class TscError(PluginError):
    code = "tsc_error"


class TscNotFound(TscError):
    status_code = 404
    code = "tsc_not_found"


def retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return DEFAULT_RETRY_SECONDS
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return DEFAULT_RETRY_SECONDS


def server_message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])[:300]
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase or str(response.status_code)


async def get_record(
    http: httpx.AsyncClient, server_url: str, kind: str, record_id: str
) -> dict[str, Any]:
    """``GET {server_url}/api/{kind}/{id}``: the record as a JSON object."""
    url = f"{server_url.rstrip('/')}/api/{kind}/{quote(record_id, safe='')}"
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the TSC server could not be reached: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise TscNotFound(f"the TSC server has no {kind} {record_id!r}: {server_message(response)}")
    if response.status_code == 429:
        raise RateLimited(
            f"the TSC server is rate limiting: {server_message(response)}",
            retry_after=retry_after(response),
        )
    if response.status_code >= 500:
        raise UpstreamError(f"the TSC server answered {response.status_code}")
    if response.status_code >= 400:
        raise TscError(
            f"the TSC server refused to give {kind} {record_id!r} ({response.status_code}): "
            f"{server_message(response)}"
        )
    try:
        record: Any = response.json()
    except ValueError:
        raise UpstreamError(f"the TSC server sent an unreadable {kind}") from None
    if not isinstance(record, dict):
        raise UpstreamError(f"the TSC server sent a {kind} that is not a JSON object")
    return record
