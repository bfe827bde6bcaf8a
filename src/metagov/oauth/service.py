"""Installing plugins through OAuth: the flow every OAuth platform (Slack first) goes through.

The browser goes Driver → ``/auth/{plugin}/authorize`` → platform → ``/auth/{plugin}/callback``
→ Driver. Between the two legs, everything the callback needs (community, Driver redirect URI,
the Driver's own ``state``) travels inside our ``state`` parameter, HMAC-signed with a key derived
from the secret keys, with a 128-bit random nonce and a 10-minute expiry. No token ever goes into a
URL: the credentials are stored encrypted, and the Driver is only told the community (and, after
a user's login, the user's platform id and the MetagovID their account is now linked to).
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
    # The person a ``user`` login links the account to; None: the account's person, or a new one.
    metagov_id: str | None = None


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
    runtime: Runtime,
    plugin: str,
    *,
    kind: str,
    community: str,
    redirect_uri: str,
    driver_state: str | None,
    metagov_id: str | None = None,
) -> str:
    """The platform URL to send the browser to."""
    spec = oauth_spec(runtime, plugin)
    if kind not in KINDS:
        raise BadRequest(f"type must be one of {', '.join(KINDS)}", code="bad_type")
    if metagov_id is not None and kind != "user":
        raise BadRequest("metagov_id applies to type=user logins only")
    check_redirect(runtime, redirect_uri)
    async with runtime.db.snapshot() as session:
        found = await tenancy.community_by_slug(session, community)
        if found is None:
            raise NotFound(f"community {community!r} not found", code="unknown_community")
        if metagov_id is not None:
            await identity.require_id(session, found, metagov_id)
    state = FlowState(
        plugin=plugin,
        kind=kind,
        community=community,
        redirect_uri=redirect_uri,
        driver_state=driver_state,
        nonce=secrets.token_hex(16),
        expires=int(time.time()) + STATE_TTL_SECONDS,
        metagov_id=metagov_id,
    )
    return spec.plugin.oauth_authorize_url(
        kind=kind, redirect_uri=callback_url(runtime, plugin), state=sign_state(runtime, state)
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
        raise OAuthError(
            "already_installed", "This workspace is already installed in another community"
        )
    await instances.enable_plugin(
        runtime,
        community,
        spec,
        install.config,
        credentials_expire_at=install.credentials_expire_at,
    )
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
