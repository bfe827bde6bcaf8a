"""The X plugin: each community connects its own X account through OAuth 2.0 (authorization
code with PKCE, user context) and the gateway acts as that account.

- Install: ``/auth/x/authorize`` → X → ``/auth/x/callback``; the instance's
  ``community_platform_id`` is the account's user id, its secrets the access and refresh tokens.
- Credentials: X's access tokens last two hours. The install records when they expire; the core
  calls :meth:`XBase.refresh_credentials` shortly before, and once after X rejects a token (401),
  which trades the refresh token for new tokens (X rotates both) saved with
  ``ctx.update_secrets``.
- Actions: ``post`` (only when the config's ``allow_posting`` is on), ``send-dm``, ``get-user``.
- Events: a periodic task reads the account's mentions since the last one it saw and sends each as
  a ``mention`` event; with ``home_timeline`` on, also the home timeline as ``timeline_tweet``
  events (the original plugin's name), when X grants that read. When X rate limits the reads,
  the task waits until X's reset time.

PKCE needs the same ``code_verifier`` at the authorize step and at the token exchange, and a
plugin is stateless between the two. The verifier is therefore derived, not stored: an HMAC, with
an app-wide secret (``METAGOV_X__PKCE_SECRET``, or the client secret), of the redirect URI and the
kind of login. It never leaves the gateway except to X's token endpoint, and only its SHA-256 (the
``code_challenge``) appears in the browser's URL. The flow's own binding to the browser is the
signed, single-use ``state`` the core checks at the callback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from metagov.plugins.sdk import (
    AuthType,
    EventType,
    Initiator,
    OAuthError,
    OAuthInstall,
    Plugin,
    PluginContext,
    PluginError,
    RateLimited,
    action,
    task,
)
from metagov.plugins.x.client import (
    XClient,
    XError,
    XOAuthRefused,
    revoke,
    token_request,
)
from metagov.plugins.x.schemas import (
    DmSent,
    GetUserParams,
    Posted,
    PostEvent,
    PostParams,
    SendDmParams,
    XConfig,
    XSettings,
    XUser,
)

Ctx = PluginContext[XConfig]

POLL_EVERY = timedelta(minutes=5)
MAX_PAGES = 5  # at most 500 posts per timeline and run
FIRST_PAGE = 100
FORBIDDEN_PAUSE = timedelta(hours=24)


class PostingDisabled(PluginError):
    """400 rather than 403: a gateway answer's statuses are the ones its OpenAPI document
    lists for every route."""

    code = "posting_disabled"


def client_for(ctx: Ctx) -> XClient:
    settings: XSettings = ctx.settings or XSettings()
    return XClient(ctx.http, settings.api_url, ctx.config.access_token.get_secret_value())


def post_url(username: str | None, post_id: str) -> str:
    return f"https://x.com/{username or 'i/web'}/status/{post_id}"


async def publish(ctx: Ctx, params: PostParams) -> Posted:
    """Post as the account, if the community allowed it."""
    if not ctx.config.allow_posting:
        raise PostingDisabled(
            f"posting is off for this {ctx.plugin_name} instance: set allow_posting to true in "
            "its config to let Drivers post"
        )
    data = await client_for(ctx).post(params.text, params.reply_to)
    post_id = str(data["id"])
    return Posted(
        id=post_id,
        text=str(data.get("text", params.text)),
        url=post_url(ctx.config.username, post_id),
    )


async def direct_message(ctx: Ctx, params: SendDmParams) -> DmSent:
    client = client_for(ctx)
    recipient = params.user_id
    if recipient is None:
        recipient = str((await client.user_by_username(str(params.username)))["id"])
    data = await client.send_dm(recipient, params.text)
    return DmSent(
        dm_conversation_id=str(data["dm_conversation_id"]), dm_event_id=str(data["dm_event_id"])
    )


async def lookup(ctx: Ctx, username: str) -> XUser:
    data = await client_for(ctx).user_by_username(username)
    return XUser(id=str(data["id"]), name=str(data.get("name", "")), username=str(data["username"]))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _now() -> datetime:
    return datetime.now(UTC)


class XBase(Plugin[XConfig]):
    """What ``x`` and its ``twitter`` alias share: the install, the credentials and the reads.
    Each subclass declares its own actions."""

    auth_type = AuthType.OAUTH
    config_model = XConfig
    community_platform_id_field = "user_id"
    settings_model = XSettings
    event_types = (
        EventType("mention", "A post mentioned the account", PostEvent),
        EventType(
            "timeline_tweet",
            "A post appeared on the account's home timeline (with home_timeline on)",
            PostEvent,
        ),
    )

    @property
    def app(self) -> XSettings:
        settings: XSettings | None = self.settings
        return settings if settings is not None else XSettings()

    # --- OAuth 2.0 with PKCE ------------------------------------------------------------------

    def _verifier(self, kind: str, redirect_uri: str) -> str:
        """The PKCE ``code_verifier`` (43 characters), the same at both steps (see the module
        docstring)."""
        key = self.app.pkce_secret or self.app.client_secret
        if key is None:
            raise PluginError(
                "the X app is not configured: set METAGOV_X__CLIENT_SECRET or "
                "METAGOV_X__PKCE_SECRET"
            )
        message = f"metagov-x-pkce-v1|{self.name}|{kind}|{redirect_uri}".encode()
        return _b64url(hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).digest())

    def oauth_authorize_url(self, *, kind: str, redirect_uri: str, state: str) -> str:
        if not self.app.client_id:
            raise PluginError("the X app is not configured (METAGOV_X__CLIENT_ID)")
        verifier = self._verifier(kind, redirect_uri)
        scopes = self.app.user_scopes if kind == "user" else self.app.scopes
        query = {
            "response_type": "code",
            "client_id": self.app.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        return f"{self.app.authorize_url}?{urlencode(query)}"

    async def oauth_exchange(
        self,
        *,
        kind: str,
        code: str | None,
        redirect_uri: str,
        http: httpx.AsyncClient,
        params: Mapping[str, str],
    ) -> OAuthInstall:
        app = self.app
        if not app.client_id:
            raise OAuthError("not_configured", "The X app is not configured")
        if not code:
            raise OAuthError("missing_code", "X sent no authorization code")
        secret = app.client_secret.get_secret_value() if app.client_secret else None
        try:
            granted = await token_request(
                http,
                app.api_url,
                {
                    "code": code,
                    "grant_type": "authorization_code",
                    "redirect_uri": redirect_uri,
                    "code_verifier": self._verifier(kind, redirect_uri),
                },
                app.client_id,
                secret,
            )
        except XOAuthRefused as exc:
            raise OAuthError(exc.error, exc.description) from None
        token = str(granted["access_token"])
        try:
            me = await XClient(http, app.api_url, token).me()
        except XError as exc:
            raise OAuthError("x_error", exc.detail) from None
        user_id = str(me["id"])
        if kind == "user":
            await revoke(http, app.api_url, token, app.client_id, secret)
            return OAuthInstall(None, {}, installer_user_id=user_id)
        config = {
            "user_id": user_id,
            "username": str(me["username"]),
            "access_token": token,
            "refresh_token": granted.get("refresh_token"),
        }
        return OAuthInstall(
            user_id,
            config,
            installer_user_id=user_id,
            credentials_expire_at=_expiry(granted),
        )

    async def refresh_credentials(self, ctx: Ctx) -> None:
        app = self.app
        refresh = ctx.config.refresh_token
        if not app.client_id or refresh is None:
            raise PluginError(
                "the X authorization cannot be renewed (no refresh token or no X app "
                f"configured): authorize again through /auth/{self.name}/authorize",
                code="x_reauthorize",
            )
        try:
            granted = await token_request(
                ctx.http,
                app.api_url,
                {"grant_type": "refresh_token", "refresh_token": refresh.get_secret_value()},
                app.client_id,
                app.client_secret.get_secret_value() if app.client_secret else None,
            )
        except XOAuthRefused as exc:
            raise PluginError(
                f"X refused to renew the authorization ({exc.error}: {exc.description}): "
                f"authorize again through /auth/{self.name}/authorize",
                code="x_reauthorize",
            ) from None
        ctx.update_secrets(
            {
                "access_token": str(granted["access_token"]),
                # X rotates refresh tokens; keep the old one if it sent none.
                "refresh_token": str(granted.get("refresh_token") or refresh.get_secret_value()),
            },
            expires_at=_expiry(granted),
        )
        ctx.log.info("renewed the X access token")

    # --- mentions and the home timeline ----------------------------------------------------

    async def initialize(self, ctx: Ctx) -> None:
        # Reads start from the moment the account was connected: what it was mentioned in
        # before is not news (no request is made here).
        if ctx.state.get("mentions_since_id") is None and ctx.state.get("watch_since") is None:
            ctx.state.set("watch_since", _now().strftime("%Y-%m-%dT%H:%M:%SZ"))

    @task(every=POLL_EVERY)
    async def read_timelines(self, ctx: Ctx) -> None:
        """Send new mentions (and home timeline posts) as events. Everything is read before
        anything is recorded, so a call the core retries after renewing the token starts over
        cleanly."""
        now = time.time()
        if float(ctx.state.get("paused_until", 0)) > now:
            return
        client = client_for(ctx)
        reads = [("mention", "mentions_since_id", f"/2/users/{ctx.config.user_id}/mentions")]
        home_until = float(ctx.state.get("home_timeline_unavailable_until", 0))
        if ctx.config.home_timeline and home_until <= now:
            reads.append(
                (
                    "timeline_tweet",
                    "home_since_id",
                    f"/2/users/{ctx.config.user_id}/timelines/reverse_chronological",
                )
            )
        found: list[tuple[str, str, list[dict[str, Any]], dict[str, Any], str | None]] = []
        try:
            for event, cursor, path in reads:
                try:
                    posts, users, newest = await self._read(ctx, client, path, cursor)
                except XError as exc:
                    if event != "timeline_tweet" or exc.status_code == 404:
                        raise
                    # The account's access level does not include the home timeline.
                    ctx.log.info("X refused the home timeline; trying again in a day")
                    ctx.state.set(
                        "home_timeline_unavailable_until", now + FORBIDDEN_PAUSE.total_seconds()
                    )
                    continue
                found.append((event, cursor, posts, users, newest))
        except RateLimited as exc:
            ctx.log.info("X is rate limiting reads; pausing for %.0f s", exc.retry_after)
            ctx.state.set("paused_until", now + exc.retry_after)
        for event, cursor, posts, users, newest in found:
            for post in sorted(posts, key=lambda p: int(p["id"])):
                self._emit(ctx, event, post, users)
            if newest is not None:
                ctx.state.set(cursor, newest)
        if ctx.state.get("mentions_since_id") is not None and "watch_since" in ctx.state:
            ctx.state.delete("watch_since")

    async def _read(
        self, ctx: Ctx, client: XClient, path: str, cursor: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
        """Every post of one timeline newer than the cursor (or than ``watch_since``), the users
        X expanded, and the newest id."""
        since_id = ctx.state.get(cursor)
        start_time = None if since_id else ctx.state.get("watch_since")
        if since_id is None and start_time is None:
            start_time = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        posts: list[dict[str, Any]] = []
        users: dict[str, Any] = {}
        newest: str | None = None
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.timeline(
                path,
                since_id=since_id,
                start_time=start_time,
                max_results=FIRST_PAGE,
                pagination_token=token,
            )
            posts.extend(p for p in page.get("data") or [] if isinstance(p, dict) and "id" in p)
            for user in (page.get("includes") or {}).get("users") or []:
                users[str(user.get("id"))] = user
            meta = page.get("meta") or {}
            if newest is None and meta.get("newest_id"):
                newest = str(meta["newest_id"])
            token = meta.get("next_token")
            if not token:
                break
        if newest is None and posts:
            newest = str(max(int(p["id"]) for p in posts))
        if newest is None and since_id is None:
            # Nothing yet: later reads start from now rather than from the stale start time.
            return posts, users, None
        return posts, users, newest

    def _emit(self, ctx: Ctx, event: str, post: dict[str, Any], users: dict[str, Any]) -> None:
        author_id = str(post["author_id"]) if post.get("author_id") else None
        author = users.get(author_id or "", {})
        data = PostEvent(
            id=str(post["id"]),
            text=str(post.get("text", "")),
            url=post_url(author.get("username"), str(post["id"])),
            author_id=author_id,
            author_username=author.get("username"),
            author_name=author.get("name"),
            created_at=post.get("created_at"),
            conversation_id=post.get("conversation_id"),
            in_reply_to_user_id=post.get("in_reply_to_user_id"),
        )
        ctx.emit_event(
            event,
            data.model_dump(),
            Initiator(
                user_id=author_id,
                provider=ctx.plugin_name,
                is_metagov_bot=author_id == ctx.config.user_id,
                extra={"username": author.get("username")},
            ),
        )


def _expiry(granted: Mapping[str, Any]) -> datetime | None:
    seconds = granted.get("expires_in")
    with contextlib.suppress(TypeError, ValueError):
        return _now() + timedelta(seconds=int(seconds)) if seconds is not None else None
    return None


class XPlugin(XBase):
    """X (formerly Twitter): post, send direct messages and hear mentions as the community's
    own account."""

    name = "x"

    @action("post", description="Post as the community's account (if allow_posting is on)")
    async def post(self, ctx: Ctx, params: PostParams) -> Posted:
        return await publish(ctx, params)

    @action("send-dm", description="Send a direct message to a user, by id or username")
    async def send_dm(self, ctx: Ctx, params: SendDmParams) -> DmSent:
        return await direct_message(ctx, params)

    @action("get-user", description="Look a user up by username")
    async def get_user(self, ctx: Ctx, params: GetUserParams) -> XUser:
        return await lookup(ctx, params.username)
