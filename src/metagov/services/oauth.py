"""Installing plugins through OAuth: the flow every OAuth platform (Slack first) goes through.

The browser goes Driver → ``/auth/{plugin}/authorize`` → platform → ``/auth/{plugin}/callback``
→ Driver. Between the two legs, everything the callback needs (community, Driver redirect URI,
the Driver's own ``state``) travels inside our ``state`` parameter, HMAC-signed with a key derived
from the secret keys, with a 128-bit random nonce and a 10-minute expiry. No token ever goes into a
URL: the credentials are stored encrypted, and the Driver is only told the community.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.base import utcnow
from metagov.db.models import Community, PluginInstance, UsedOAuthState
from metagov.errors import BadRequest, MetagovError, NotFound
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import OAuthError
from metagov.runtime import Runtime
from metagov.services import plugins as plugin_service

STATE_TTL_SECONDS = 600
KINDS = ("app", "user")


class InvalidState(BadRequest):
    code = "invalid_state"


@dataclass(frozen=True)
class FlowState:
    plugin: str
    kind: str
    community: str
    redirect_uri: str
    driver_state: str | None
    nonce: str
    expires: int


def _key(runtime: Runtime) -> bytes:
    first = runtime.settings.secret_keys[0].get_secret_value()
    return hashlib.sha256(b"metagov-oauth-state:" + first.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_state(runtime: Runtime, state: FlowState) -> str:
    payload = _b64(json.dumps(state.__dict__, separators=(",", ":")).encode())
    mac = _b64(hmac.new(_key(runtime), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def read_state(runtime: Runtime, token: str, plugin: str, now: float | None = None) -> FlowState:
    """Check the signature, the plugin and the expiry of a ``state`` we issued."""
    payload, _, mac = token.partition(".")
    expected = _b64(hmac.new(_key(runtime), payload.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac, expected):
        raise InvalidState("the OAuth state is not one this gateway issued")
    try:
        state = FlowState(**json.loads(_unb64(payload)))
    except (ValueError, TypeError):
        raise InvalidState("the OAuth state is malformed") from None
    if state.plugin != plugin:
        raise InvalidState("the OAuth state belongs to another plugin")
    if state.expires < (time.time() if now is None else now):
        raise InvalidState("the OAuth state has expired; start the install again")
    return state


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def check_redirect(runtime: Runtime, redirect_uri: str) -> None:
    if _without_query(redirect_uri) not in runtime.settings.auth_redirect_allowlist:
        raise BadRequest(
            "redirect_uri is not allowed; add it to METAGOV_AUTH_REDIRECT_ALLOWLIST",
            code="redirect_not_allowed",
        )


def callback_url(runtime: Runtime, plugin: str) -> str:
    return f"{runtime.settings.base_url.rstrip('/')}/auth/{plugin}/callback"


def oauth_spec(runtime: Runtime, plugin: str) -> PluginSpec:
    spec = runtime.registry.get(plugin)
    if not spec.oauth:
        raise NotFound(f"plugin {plugin!r} has no OAuth install")
    return spec


async def authorize(
    session: AsyncSession,
    runtime: Runtime,
    plugin: str,
    *,
    kind: str,
    community: str,
    redirect_uri: str,
    driver_state: str | None,
) -> str:
    """The platform URL to send the browser to."""
    spec = oauth_spec(runtime, plugin)
    if kind not in KINDS:
        raise BadRequest(f"type must be one of {', '.join(KINDS)}", code="bad_type")
    check_redirect(runtime, redirect_uri)
    found = await session.scalar(select(Community.id).where(Community.slug == community))
    if found is None:
        raise NotFound(f"community {community!r} not found", code="unknown_community")
    state = FlowState(
        plugin=plugin,
        kind=kind,
        community=community,
        redirect_uri=redirect_uri,
        driver_state=driver_state,
        nonce=secrets.token_hex(16),
        expires=int(time.time()) + STATE_TTL_SECONDS,
    )
    return spec.plugin.oauth_authorize_url(
        kind=kind, redirect_uri=callback_url(runtime, plugin), state=sign_state(runtime, state)
    )


def back_to_driver(state: FlowState, **params: str | None) -> str:
    query = {k: v for k, v in {**params, "state": state.driver_state}.items() if v is not None}
    separator = "&" if urlsplit(state.redirect_uri).query else "?"
    return f"{state.redirect_uri}{separator}{urlencode(query)}"


async def callback(
    session: AsyncSession,
    runtime: Runtime,
    plugin: str,
    *,
    state_token: str,
    params: Mapping[str, str],
) -> str:
    """Finish the install; returns where to redirect the browser (the Driver, always, once the
    state is trusted). ``params`` is the callback's whole query string: the plugin reads what its
    platform sends besides ``code`` (an installation id, a guild id)."""
    spec = oauth_spec(runtime, plugin)
    state = read_state(runtime, state_token, plugin)
    await _use_once(session, state)
    error = params.get("error")
    if error:
        return back_to_driver(state, error=error, error_description="The install was not approved")
    community = await session.scalar(select(Community).where(Community.slug == state.community))
    if community is None:
        return back_to_driver(
            state, error="unknown_community", error_description="The community no longer exists"
        )
    try:
        async with session.begin_nested():  # a refused install leaves nothing half-written
            return await _finish(session, runtime, spec, state, community, params)
    except OAuthError as exc:
        return back_to_driver(state, error=exc.code, error_description=exc.description)
    except MetagovError as exc:  # the platform failed, or refused the resulting config
        return back_to_driver(state, error=exc.code, error_description=exc.detail)


async def _use_once(session: AsyncSession, state: FlowState) -> None:
    """Record the state's nonce; a second callback with the same state is refused."""
    if await session.get(UsedOAuthState, state.nonce) is not None:
        raise InvalidState("this OAuth state was already used; start the install again")
    now = utcnow()
    await session.execute(delete(UsedOAuthState).where(UsedOAuthState.expires_at < now))
    session.add(
        UsedOAuthState(nonce=state.nonce, expires_at=datetime.fromtimestamp(state.expires, UTC))
    )
    await session.flush()


async def _installed_in(
    session: AsyncSession, plugin: str, platform_id: str, *, community: Community, here: bool
) -> str | None:
    """The slug of a community (this one, or another) where the tenant is already installed."""
    same = Community.id == community.id if here else Community.id != community.id
    slug: str | None = await session.scalar(
        select(Community.slug)
        .join(PluginInstance, PluginInstance.community_id == Community.id)
        .where(
            PluginInstance.name == plugin,
            PluginInstance.community_platform_id == platform_id,
            same,
        )
    )
    return slug


async def _enabled_in(session: AsyncSession, plugin: str, community: Community) -> bool:
    found = await session.scalar(
        select(PluginInstance.id).where(
            PluginInstance.name == plugin, PluginInstance.community_id == community.id
        )
    )
    return found is not None


async def _finish(
    session: AsyncSession,
    runtime: Runtime,
    spec: PluginSpec,
    state: FlowState,
    community: Community,
    params: Mapping[str, str],
) -> str:
    install = await spec.plugin.oauth_exchange(
        kind=state.kind,
        code=params.get("code") or None,
        redirect_uri=callback_url(runtime, spec.name),
        http=runtime.http,
        params=dict(params),
    )
    pid = install.community_platform_id
    if state.kind == "user":
        if pid is None:
            if not await _enabled_in(session, spec.name, community):
                raise OAuthError("not_installed", "The plugin is not enabled in the community")
        elif await _installed_in(session, spec.name, pid, community=community, here=True) is None:
            raise OAuthError("not_installed", "This workspace is not installed in the community")
        return back_to_driver(state, community=community.slug, user_id=install.installer_user_id)
    if pid is None:
        raise OAuthError("no_tenant", "The platform did not say what was installed")
    if await _installed_in(session, spec.name, pid, community=community, here=False):
        raise OAuthError(
            "already_installed", "This workspace is already installed in another community"
        )
    await plugin_service.enable_plugin(
        session,
        runtime,
        community,
        spec,
        install.config,
        credentials_expire_at=install.credentials_expire_at,
    )
    return back_to_driver(state, community=community.slug)
