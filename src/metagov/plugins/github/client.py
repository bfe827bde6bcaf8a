"""GitHub's REST API over the gateway's shared httpx client, as the App or as an installation.

A GitHub App authenticates in two ways. As the App itself, with a JWT it signs with its private
key (RS256, valid for at most ten minutes): enough to read its installations and to mint tokens.
As one installation, with an installation access token minted from that JWT: valid for an hour,
it is what acts on the community's repositories. The token is a secret config field, stored
encrypted; the core renews it shortly before it expires, and once more when GitHub answers 401.

GitHub's failures become errors a Driver can act on: its refusals name GitHub's message, primary
and secondary rate limits become 429 with ``Retry-After``, and an unreachable or failing GitHub
is a 502.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from metagov.plugins.github.schemas import GitHubConfig, GitHubSettings
from metagov.plugins.sdk import (
    CredentialsRejected,
    PluginContext,
    PluginError,
    RateLimited,
    UpstreamError,
)

API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 50  # 5 000 items: more than any vote we run, and a bound on one call's work
JWT_LIFETIME_SECONDS = 540  # GitHub accepts at most ten minutes
CLOCK_SKEW_SECONDS = 60  # issued in the past, as GitHub advises, for clocks that drift
DEFAULT_RATE_LIMIT_WAIT = 60.0
KEPT_STATUSES = frozenset({403, 404, 409, 422})


class GitHubError(PluginError):
    """GitHub refused a request. The Driver gets GitHub's status when it means the same thing
    here (403, 404, 409, 422), else 400, and GitHub's own message."""

    code = "github_error"

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status
        self.status_code = status if status in KEPT_STATUSES else 400


class NotConfigured(PluginError):
    code = "github_not_configured"


def _message(response: httpx.Response) -> str:
    """GitHub's explanation of a refusal: its ``message`` and the details of each error."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no message"
    if not isinstance(body, dict):
        return "no message"
    message = str(body.get("message") or response.reason_phrase or "no message")
    details = []
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            text = err.get("message") or " ".join(
                str(err[k]) for k in ("resource", "field", "code") if err.get(k)
            )
            if text:
                details.append(str(text))
        elif isinstance(err, str):
            details.append(err)
    return f"{message} ({'; '.join(details)})" if details else message


def _rate_limited(response: httpx.Response, what: str) -> RateLimited | None:
    """GitHub's primary and secondary rate limits, which answer 403 or 429."""
    if response.status_code not in (403, 429):
        return None
    headers = response.headers
    detail = f"GitHub is rate limiting {what}"
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return RateLimited(detail, retry_after=max(1.0, float(retry_after)))
        except ValueError:
            pass
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        try:
            reset = float(headers["x-ratelimit-reset"])
        except ValueError:
            reset = time.time() + DEFAULT_RATE_LIMIT_WAIT
        return RateLimited(detail, retry_after=max(1.0, reset - time.time()))
    if response.status_code == 429 or "rate limit" in _message(response).lower():
        return RateLimited(detail, retry_after=DEFAULT_RATE_LIMIT_WAIT)
    return None


class GitHubClient:
    """One identity (the App's JWT, an installation token or a user token) on GitHub's API."""

    def __init__(
        self, http: httpx.AsyncClient, api_url: str, token: str, *, identity: str = "installation"
    ) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._token = token
        self._identity = identity

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        what = f"{method} {path}"
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self._token}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "metagov",
        }
        try:
            response = await self._http.request(
                method, f"{self._api_url}{path}", params=params, json=json, headers=headers
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"GitHub could not be reached: {type(exc).__name__}") from None
        if response.is_success:
            return response
        limited = _rate_limited(response, what)
        if limited is not None:
            raise limited
        if response.status_code == 401:
            if self._identity == "installation":
                raise CredentialsRejected(f"GitHub refused the installation's token ({what})")
            raise UpstreamError(
                f"GitHub refused the {self._identity}'s credentials ({what}): {_message(response)}"
            )
        if response.status_code >= 500:
            raise UpstreamError(f"GitHub answered {response.status_code} to {what}")
        raise GitHubError(
            f"GitHub answered {response.status_code} to {what}: {_message(response)}",
            response.status_code,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """The JSON answer of a request (None for an empty one, such as 204)."""
        response = await self.request(method, path, params=params, json=json)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(f"GitHub sent an unreadable answer to {method} {path}") from None

    async def paginate(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paginated list, a hundred per request."""
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            batch = await self.call(
                "GET", path, params={**(params or {}), "per_page": PER_PAGE, "page": page}
            )
            if not isinstance(batch, list):
                raise UpstreamError(f"GitHub sent no list for GET {path}")
            items.extend(batch)
            if len(batch) < PER_PAGE:
                break
        return items


# --- the App ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _load_key(pem: str) -> RSAPrivateKey:
    """Parse the App's key once: checking an RSA key costs milliseconds, a JWT is signed often."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise NotConfigured(
            "the GitHub App's private key is not a PEM private key (METAGOV_GITHUB__PRIVATE_KEY)"
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise NotConfigured("the GitHub App's private key must be an RSA key")
    return key


def _pem(settings: GitHubSettings) -> str:
    if settings.private_key is not None:
        pem = settings.private_key.get_secret_value()
        # An environment variable often carries the PEM on one line, with literal "\n".
        return pem.replace("\\n", "\n") if "\n" not in pem else pem
    if settings.private_key_file is not None:
        try:
            return settings.private_key_file.read_text()
        except OSError as exc:
            raise NotConfigured(
                f"the GitHub App's private key file cannot be read ({exc.strerror})"
            ) from None
    raise NotConfigured(
        "the GitHub App has no private key (METAGOV_GITHUB__PRIVATE_KEY or __PRIVATE_KEY_FILE)"
    )


def app_jwt(settings: GitHubSettings, *, now: float | None = None) -> str:
    """A JWT that authenticates as the App: RS256, issued by the App id, good for nine minutes."""
    if not settings.app_id:
        raise NotConfigured("the GitHub App is not configured (METAGOV_GITHUB__APP_ID)")
    issued = int(time.time() if now is None else now)
    claims = {
        "iat": issued - CLOCK_SKEW_SECONDS,
        "exp": issued + JWT_LIFETIME_SECONDS,
        "iss": settings.app_id,
    }
    return jwt.encode(claims, _load_key(_pem(settings)), algorithm="RS256")


def app_client(http: httpx.AsyncClient, settings: GitHubSettings) -> GitHubClient:
    return GitHubClient(http, settings.api_url, app_jwt(settings), identity="App")


async def get_installation(
    http: httpx.AsyncClient, settings: GitHubSettings, installation_id: str
) -> dict[str, Any]:
    found = await app_client(http, settings).call("GET", f"/app/installations/{installation_id}")
    if not isinstance(found, dict):
        raise UpstreamError("GitHub sent an unreadable installation")
    return found


async def mint_token(ctx: PluginContext[GitHubConfig]) -> str:
    """Mint an installation access token and keep it (encrypted) until shortly before it
    expires."""
    settings: GitHubSettings = ctx.settings
    installation_id = ctx.config.installation_id
    try:
        granted = await app_client(ctx.http, settings).call(
            "POST", f"/app/installations/{installation_id}/access_tokens"
        )
    except GitHubError as exc:
        if exc.status == 404:
            raise GitHubError(
                f"GitHub has no installation {installation_id} of this App any more "
                "(was the App uninstalled?)",
                404,
            ) from None
        if exc.status == 403:
            raise GitHubError(
                f"GitHub refused a token for installation {installation_id} "
                f"(is it suspended?): {exc.detail}",
                403,
            ) from None
        raise
    try:
        token = str(granted["token"])
        expires_at = datetime.fromisoformat(str(granted["expires_at"]))
    except (TypeError, KeyError, ValueError):
        raise UpstreamError("GitHub sent an unreadable installation token") from None
    ctx.update_secrets({"installation_token": token}, expires_at=expires_at)
    if ctx.state.get("token_installation_id") != installation_id:
        ctx.state.set("token_installation_id", installation_id)
    return token


async def installation_client(ctx: PluginContext[GitHubConfig]) -> GitHubClient:
    """A client acting as the community's installation, minting its token if it has none."""
    settings: GitHubSettings = ctx.settings
    token = ctx.config.installation_token
    value = token.get_secret_value() if token is not None else await mint_token(ctx)
    return GitHubClient(ctx.http, settings.api_url, value)
