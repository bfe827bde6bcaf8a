"""A NEAR node's JSON-RPC API over the gateway's shared httpx client.

NEAR answers errors in the JSON-RPC ``error`` object (``name``, ``cause.name``, ``data``); they
become errors naming NEAR's cause: refusals of the request (an unknown account or access key, a
contract that panicked while viewing, an invalid transaction) are 400s, a node that failed,
timed out or could not be reached is a 502, and an HTTP 429 is passed on with its ``Retry-After``.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from metagov.plugins.sdk import PluginError, RateLimited, UpstreamError

DEFAULT_RETRY_SECONDS = 10.0
SEND_TIMEOUT_SECONDS = 30.0
_UPSTREAM_CAUSES = {"INTERNAL_ERROR", "TIMEOUT_ERROR", "UNKNOWN_BLOCK", "NO_SYNCED_BLOCKS"}


class NearError(PluginError):
    code = "near_error"

    def __init__(self, detail: str, cause: str, data: Any = None) -> None:
        super().__init__(detail)
        self.cause = cause
        self.data = data


class NearUnknownAccessKey(NearError):
    code = "near_unknown_access_key"


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


def _describe(error: dict[str, Any]) -> tuple[str, str, Any]:
    """NEAR's cause name, a readable explanation, and the error's data."""
    found = error.get("cause")
    cause: dict[str, Any] = found if isinstance(found, dict) else {}
    name = str(cause.get("name") or error.get("name") or "UNKNOWN_ERROR")
    data = error.get("data")
    found = cause.get("info")
    info: dict[str, Any] = found if isinstance(found, dict) else {}
    if isinstance(info.get("vm_error"), str):
        text = info["vm_error"]
    elif isinstance(data, str):
        text = data
    elif data is not None:
        text = json.dumps(data, separators=(",", ":"))
    else:
        text = str(error.get("message", ""))
    return name, text[:500], data


class NearRpc:
    def __init__(self, http: httpx.AsyncClient, node_url: str) -> None:
        self._http = http
        self._url = node_url

    async def call(self, method: str, params: Any, *, wait_seconds: float | None = None) -> Any:
        payload = {"jsonrpc": "2.0", "id": "metagov", "method": method, "params": params}
        try:
            response = await self._http.post(
                self._url,
                json=payload,
                timeout=httpx.Timeout(wait_seconds) if wait_seconds else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"the NEAR node could not be reached: {type(exc).__name__}"
            ) from None
        if response.status_code == 429:
            raise RateLimited("the NEAR node is rate limiting", retry_after=retry_after(response))
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            name, text, data = _describe(body["error"])
            if name in _UPSTREAM_CAUSES or response.status_code >= 500:
                raise UpstreamError(f"the NEAR node failed ({name}): {text}")
            if name == "UNKNOWN_ACCESS_KEY":
                raise NearUnknownAccessKey(
                    f"NEAR refused {method} ({name}): the private key is not an access key of "
                    "the account",
                    name,
                    data,
                )
            raise NearError(f"NEAR refused {method} ({name}): {text}", name, data)
        if response.status_code >= 400 or not isinstance(body, dict) or "result" not in body:
            raise UpstreamError(f"the NEAR node answered {response.status_code} to {method}")
        return body["result"]

    async def query(self, params: dict[str, Any]) -> dict[str, Any]:
        result = await self.call("query", {"finality": "final", **params})
        if not isinstance(result, dict):
            raise UpstreamError("the NEAR node sent an unreadable query result")
        if isinstance(result.get("error"), str):  # how older nodes report a failed view call
            raise NearError(
                f"NEAR refused query ({params.get('request_type')}): {result['error'][:500]}",
                "CONTRACT_EXECUTION_ERROR",
            )
        return result

    async def send_tx(self, signed_tx_base64: str) -> dict[str, Any]:
        result = await self.call(
            "send_tx",
            {"signed_tx_base64": signed_tx_base64, "wait_until": "EXECUTED_OPTIMISTIC"},
            wait_seconds=SEND_TIMEOUT_SECONDS,
        )
        if not isinstance(result, dict):
            raise UpstreamError("the NEAR node sent an unreadable transaction outcome")
        return result
