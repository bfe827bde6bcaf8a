"""Installing plugins through OAuth: the flow every OAuth platform (Slack first) goes through.

A Driver asks for an install URL (``POST /api/internal/oauth/{plugin}/authorize``, with its key and
the community); the browser then goes install URL (``/auth/{plugin}/authorize?install=…``) →
platform → ``/auth/{plugin}/callback`` → Driver. The install URL carries a token the gateway
signed for that Driver's community: it expires after a few minutes and works once, so nobody
can start an install into a community that is not theirs by knowing its slug.

Between the two legs at the platform, everything the callback needs (community, Driver redirect
URI, the Driver's own ``state``) travels inside our ``state`` parameter, HMAC-signed with a key
derived from the secret keys, with a 128-bit random nonce and a 10-minute expiry. No token ever
goes into a URL: the credentials are stored encrypted, and the Driver is only told the community
(and, after a user's login, the user's platform id and the MetagovID their account is now linked
to).
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

from metagov.db.base import utcnow
from metagov.db.models import Community
from metagov.errors import BadRequest, MetagovError, NotFound
from metagov.identity import service as identity
from metagov.instances import service as instances
from metagov.oauth import repository
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import OAuthError, OAuthInstall
from metagov.runtime import Runtime
from metagov.tenancy import repository as tenancy

STATE_TTL_SECONDS = 600
# An install URL is handed from the Driver to a browser right away: a few minutes is plenty.
INSTALL_TTL_SECONDS = 300
KINDS = ("app", "user")
# What each signed token is for: an install URL is no platform state, nor the reverse.
_STATE = b"metagov-oauth-state:"
_INSTALL = b"metagov-oauth-install:"


class InvalidState(BadRequest):
    code = "invalid_state"


class InvalidInstall(BadRequest):
    code = "invalid_install"


@dataclass(frozen=True)
class FlowState:
    plugin: str
    kind: str
    community: str
    redirect_uri: str
    driver_state: str | None
    nonce: str
    expires: int
    # The person a ``user`` login links the account to; None: the account's person, or a new one.
    metagov_id: str | None = None


def _key(runtime: Runtime, purpose: bytes = _STATE) -> bytes:
    first = runtime.settings.secret_keys[0].get_secret_value()
    return hashlib.sha256(purpose + first.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_state(runtime: Runtime, state: FlowState, purpose: bytes = _STATE) -> str:
    payload = _b64(json.dumps(state.__dict__, separators=(",", ":")).encode())
    mac = _b64(hmac.new(_key(runtime, purpose), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def read_state(
    runtime: Runtime,
    token: str,
    plugin: str,
    now: float | None = None,
    *,
    purpose: bytes = _STATE,
    error: type[BadRequest] = InvalidState,
) -> FlowState:
    """Check the signature, the plugin and the expiry of a ``state`` (or an install token) we
    issued."""
    what = "OAuth state" if purpose == _STATE else "install URL"
    payload, _, mac = token.partition(".")
    expected = _b64(hmac.new(_key(runtime, purpose), payload.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac, expected):
        raise error(f"the {what} is not one this gateway issued")
    try:
        state = FlowState(**json.loads(_unb64(payload)))
    except (ValueError, TypeError):
        raise error(f"the {what} is malformed") from None
    if state.plugin != plugin:
        raise error(f"the {what} belongs to another plugin")
    if state.expires < (time.time() if now is None else now):
        raise error(f"the {what} has expired; start the install again")
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


@dataclass(frozen=True)
class InstallUrl:
    url: str
    expires_at: datetime


async def install_url(
    runtime: Runtime,
    plugin: str,
    community: Community,
    *,
    kind: str,
    redirect_uri: str,
    driver_state: str | None,
    metagov_id: str | None = None,
) -> InstallUrl:
    """A short-lived, single-use URL that starts installing ``plugin`` into the Driver's
    ``community`` (or logging a user in, ``kind="user"``) in a browser. The Driver's key
    authorized the request; the URL carries that authorization, signed."""
    oauth_spec(runtime, plugin)
    if kind not in KINDS:
        raise BadRequest(f"type must be one of {', '.join(KINDS)}", code="bad_type")
    if metagov_id is not None and kind != "user":
        raise BadRequest("metagov_id applies to type=user logins only")
    check_redirect(runtime, redirect_uri)
    if metagov_id is not None:
        async with runtime.db.snapshot() as session:
            await identity.require_id(session, community, metagov_id)
    expires = int(time.time()) + INSTALL_TTL_SECONDS
    grant = FlowState(
        plugin=plugin,
        kind=kind,
        community=community.slug,
        redirect_uri=redirect_uri,
        driver_state=driver_state,
        nonce=secrets.token_hex(16),
        expires=expires,
        metagov_id=metagov_id,
    )
    token = sign_state(runtime, grant, _INSTALL)
    base = runtime.settings.base_url.rstrip("/")
    return InstallUrl(
        f"{base}/auth/{plugin}/authorize?{urlencode({'install': token})}",
        datetime.fromtimestamp(expires, UTC),
    )


async def authorize(runtime: Runtime, plugin: str, install_token: str | None) -> str:
    """The platform URL to send the browser to, for an install URL a Driver obtained; the URL
    is spent on the way."""
    spec = oauth_spec(runtime, plugin)
    if not install_token:
        raise InvalidInstall(
            f"installs start from a URL the Driver obtains with POST "
            f"/api/internal/oauth/{plugin}/authorize; this one carries none",
            code="install_url_required",
        )
    grant = read_state(runtime, install_token, plugin, purpose=_INSTALL, error=InvalidInstall)
    async with runtime.unit_of_work() as session:
        fresh = await repository.use_state(
            session, "i" + grant.nonce, datetime.fromtimestamp(grant.expires, UTC), utcnow()
        )
    if not fresh:
        raise InvalidInstall("this install URL was already used; ask the Driver for a new one")
    async with runtime.db.snapshot() as session:
        exists = await tenancy.slug_taken(session, grant.community)
    if not exists:
        raise NotFound(f"community {grant.community!r} not found", code="unknown_community")
    state = FlowState(
        plugin=plugin,
        kind=grant.kind,
        community=grant.community,
        redirect_uri=grant.redirect_uri,
        driver_state=grant.driver_state,
        nonce=secrets.token_hex(16),
        expires=int(time.time()) + STATE_TTL_SECONDS,
        metagov_id=grant.metagov_id,
    )
    return spec.plugin.oauth_authorize_url(
        kind=grant.kind,
        redirect_uri=callback_url(runtime, plugin),
        state=sign_state(runtime, state),
    )


def back_to_driver(state: FlowState, **params: str | None) -> str:
    query = {k: v for k, v in {**params, "state": state.driver_state}.items() if v is not None}
    separator = "&" if urlsplit(state.redirect_uri).query else "?"
    return f"{state.redirect_uri}{separator}{urlencode(query)}"


async def callback(
    runtime: Runtime,
    plugin: str,
    *,
    state_token: str,
    params: Mapping[str, str],
) -> str:
    """Finish the install; returns where to redirect the browser (the Driver, always, once the
    state is trusted). ``params`` is the callback's whole query string: the plugin reads what its
    platform sends besides ``code`` (an installation id, a guild id).

    The state is spent first, in its own transaction; the platform is called with nothing open;
    the install is saved last, through the same path as any enable.
    """
    spec = oauth_spec(runtime, plugin)
    state = read_state(runtime, state_token, plugin)
    async with runtime.unit_of_work() as session:
        fresh = await repository.use_state(
            session, state.nonce, datetime.fromtimestamp(state.expires, UTC), utcnow()
        )
    if not fresh:
        raise InvalidState("this OAuth state was already used; start the install again")
    error = params.get("error")
    if error:
        return back_to_driver(state, error=error, error_description="The install was not approved")
    async with runtime.db.snapshot() as session:
        community = await tenancy.community_by_slug(session, state.community)
    if community is None:
        return back_to_driver(
            state, error="unknown_community", error_description="The community no longer exists"
        )
    try:
        return await _finish(runtime, spec, state, community, params)
    except OAuthError as exc:
        return back_to_driver(state, error=exc.code, error_description=exc.description)
    except MetagovError as exc:  # the platform failed, or refused the resulting config
        return back_to_driver(state, error=exc.code, error_description=exc.detail)


async def _finish(
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
        return await _login(runtime, spec, state, community, install)
    async with runtime.db.snapshot() as session:
        if pid is None:
            raise OAuthError("no_tenant", "The platform did not say what was installed")
        elsewhere = await repository.installed_in(
            session, spec.name, pid, community_id=community.id, here=False
        )
    if elsewhere:
        await spec.plugin.oauth_revoke(install, runtime.http)
        raise OAuthError(
            "already_installed", "This workspace is already installed in another community"
        )
    try:
        await instances.enable_plugin(
            runtime,
            community,
            spec,
            install.config,
            credentials_expire_at=install.credentials_expire_at,
        )
    except MetagovError as exc:
        if exc.code == "platform_tenant_taken":  # claimed meanwhile: give the grant back too
            await spec.plugin.oauth_revoke(install, runtime.http)
        raise
    return back_to_driver(state, community=community.slug)


async def _login(
    runtime: Runtime,
    spec: PluginSpec,
    state: FlowState,
    community: Community,
    install: OAuthInstall,
) -> str:
    """A user logged in: link their account to a MetagovID of the community (the one the Driver
    named, else the account's person, else a new one) and tell the Driver which. An account
    linked to another person is left where it is, and the Driver is told so."""
    pid = install.community_platform_id
    async with runtime.db.snapshot() as session:
        if pid is None:
            known = await repository.enabled_in(session, spec.name, community.id)
        else:
            known = (
                await repository.installed_in(
                    session, spec.name, pid, community_id=community.id, here=True
                )
                is not None
            )
    if not known:
        raise OAuthError("not_installed", "This workspace is not installed in the community")
    user_id = install.installer_user_id
    if user_id is None:
        return back_to_driver(state, community=community.slug)
    try:
        async with runtime.unit_of_work() as session:
            person = await identity.link_login(
                session,
                community,
                platform_type=spec.name,
                platform_identifier=user_id,
                community_platform_id=pid,
                metagov_id=state.metagov_id,
            )
    except identity.AccountLinked as exc:
        return back_to_driver(
            state,
            community=community.slug,
            user_id=user_id,
            error=exc.code,
            error_description=exc.detail,
        )
    return back_to_driver(state, community=community.slug, user_id=user_id, metagov_id=person)
