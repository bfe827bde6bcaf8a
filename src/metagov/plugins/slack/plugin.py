"""The Slack plugin: one Slack app serves every community; each community's workspace is an
instance (``community_platform_id`` = team id) installed through OAuth.

Every request from Slack is checked against the app's signing secret (``v0`` HMAC over
``v0:{timestamp}:{body}``, timestamps within five minutes) before anything is stored. Events API
events become Driver events, once per ``event_id`` however often Slack retries; interactivity
reaches the votes; uninstalling the app disables the instance.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from metagov.plugins.sdk import (
    AuthType,
    EventType,
    OAuthError,
    OAuthInstall,
    Plugin,
    PluginContext,
    PluginError,
    WebhookAccepted,
    WebhookRejected,
    WebhookReply,
    WebhookRequest,
    WebhookScope,
    action,
)
from metagov.plugins.slack.client import SlackApiError, SlackClient, client_for
from metagov.plugins.slack.schemas import (
    MethodCall,
    MethodResult,
    PostedMessage,
    PostMessage,
    SlackConfig,
    SlackSettings,
)
from metagov.plugins.slack.votes import AdvancedVote, EmojiVote, clicked_message, interaction

TOLERANCE_SECONDS = 300

Ctx = PluginContext[SlackConfig]


class SlackPlugin(Plugin[SlackConfig]):
    """Slack workspaces: events, messages and votes."""

    name = "slack"
    auth_type = AuthType.OAUTH
    config_model = SlackConfig
    community_platform_id_field = "team_id"
    webhooks = WebhookScope.PLATFORM
    settings_model = SlackSettings
    processes = (EmojiVote, AdvancedVote)
    event_types = (
        EventType("message", "A message was posted (any Events API event type is forwarded)"),
        EventType("app_mention", "The app was mentioned"),
        EventType("reaction_added", "A reaction was added to a message"),
        EventType("app_uninstalled", "The workspace uninstalled the app; the plugin is disabled"),
        EventType("tokens_revoked", "The workspace revoked the app's tokens; it is disabled"),
    )

    @property
    def app(self) -> SlackSettings:
        settings: SlackSettings = self.settings
        return settings

    # --- webhooks -------------------------------------------------------------------------

    async def verify_webhook(
        self, request: WebhookRequest, config: SlackConfig | None
    ) -> WebhookAccepted:
        secret = self.app.signing_secret
        if secret is None:
            raise WebhookRejected("signing_secret_not_configured")
        stamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not stamp or not signature:
            raise WebhookRejected("missing_headers")
        try:
            age = abs(time.time() - int(stamp))
        except ValueError:
            raise WebhookRejected("bad_timestamp") from None
        if age > TOLERANCE_SECONDS:
            raise WebhookRejected("stale_timestamp")
        basestring = f"v0:{stamp}:".encode() + request.body
        expected = (
            "v0="
            + hmac.new(secret.get_secret_value().encode(), basestring, hashlib.sha256).hexdigest()
        )
        if not hmac.compare_digest(signature, expected):
            raise WebhookRejected("bad_signature")
        return self._classify(request)

    def _classify(self, request: WebhookRequest) -> WebhookAccepted:
        """What an authentic request from Slack is, and which workspace it is about."""
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            try:
                payload = json.loads(request.form().get("payload", "{}"))
            except ValueError:
                raise WebhookRejected("bad_payload") from None
            team = (payload.get("team") or {}).get("id") or (payload.get("user") or {}).get(
                "team_id"
            )
            if payload.get("type") != "block_actions" or not team:
                return WebhookAccepted(store=False)
            delivery = payload.get("trigger_id") or _action_stamp(payload)
            return WebhookAccepted(delivery_id=delivery, community_platform_id=team)
        try:
            body = request.json()
        except ValueError:
            raise WebhookRejected("bad_payload") from None
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "url_verification":
            return WebhookAccepted(
                store=False, reply=WebhookReply({"challenge": body.get("challenge")})
            )
        if kind == "event_callback" and body.get("team_id") and body.get("event_id"):
            # Slack retries (X-Slack-Retry-Num) repeat the event_id: stored once, handled once.
            return WebhookAccepted(
                delivery_id=str(body["event_id"]), community_platform_id=str(body["team_id"])
            )
        return WebhookAccepted(store=False)  # app_rate_limited and other notices

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str]:
        """Button clicks reach the vote on whose message they were made; Events API events reach
        no vote."""
        payload = interaction(webhook)
        key = clicked_message(payload) if payload is not None else None
        return [key] if key else []

    async def receive_webhook(self, ctx: Ctx, webhook: WebhookRequest) -> None:
        if not webhook.headers.get("content-type", "").startswith("application/json"):
            return  # interactivity: for the votes, which get every webhook too
        body = webhook.json()
        event = body.get("event") or {}
        kind = str(event.get("type", "unknown"))
        user = event.get("user")
        bot = bool(
            (user and user == ctx.config.bot_user_id)
            or (self.app.app_id and event.get("app_id") == self.app.app_id)
        )
        ctx.emit_event(
            kind,
            event,
            {"user_id": user, "provider": "slack", "is_metagov_bot": bot},
        )
        if kind == "app_uninstalled" or (kind == "tokens_revoked" and _bot_revoked(event)):
            ctx.disable_instance(f"slack: {kind}")

    # --- OAuth ------------------------------------------------------------------------------

    def oauth_authorize_url(self, *, kind: str, redirect_uri: str, state: str) -> str:
        if not self.app.client_id:
            raise PluginError("the Slack app is not configured (METAGOV_SLACK__CLIENT_ID)")
        scopes = {"scope": ",".join(self.app.bot_scopes)} if kind == "app" else {}
        if kind == "user":
            scopes = {"user_scope": ",".join(self.app.user_scopes)}
        query = {"client_id": self.app.client_id, **scopes, "redirect_uri": redirect_uri}
        return f"{self.app.authorize_url}?{urlencode({**query, 'state': state})}"

    async def oauth_exchange(
        self,
        *,
        kind: str,
        code: str | None,
        redirect_uri: str,
        http: httpx.AsyncClient,
        params: Mapping[str, str],
    ) -> OAuthInstall:
        if not self.app.client_id or self.app.client_secret is None:
            raise OAuthError("not_configured", "The Slack app is not configured")
        if not code:
            raise OAuthError("missing_code", "The install was not approved")
        basic = httpx.BasicAuth(self.app.client_id, self.app.client_secret.get_secret_value())
        try:
            granted = await SlackClient(http, self.app.api_url).call(
                "oauth.v2.access", {"code": code, "redirect_uri": redirect_uri}, auth=basic
            )
        except SlackApiError as exc:
            raise OAuthError(exc.error, "Slack refused the authorization code") from None
        team = granted.get("team") or {}
        installer = (granted.get("authed_user") or {}).get("id")
        if kind == "user":
            return OAuthInstall(str(team.get("id", "")), {}, installer)
        token = granted.get("access_token")
        if not token or granted.get("token_type") != "bot":
            raise OAuthError("no_bot_token", "Slack did not grant a bot token")
        await self._check_admin(http, token, installer)
        config = {
            "team_id": team.get("id"),
            "team_name": team.get("name", ""),
            "bot_token": token,
            "bot_user_id": granted.get("bot_user_id"),
            "installer_user_id": installer,
        }
        return OAuthInstall(str(team.get("id")), config, installer)

    async def _check_admin(self, http: httpx.AsyncClient, token: str, user: str | None) -> None:
        """Only workspace admins and owners may connect a workspace to a community."""
        if not user:
            raise OAuthError("not_admin", "The installer could not be identified")
        info = await SlackClient(http, self.app.api_url, token).call("users.info", {"user": user})
        member = info.get("user") or {}
        if not (member.get("is_admin") or member.get("is_owner")):
            await self._revoke(http, token)
            raise OAuthError("not_admin", "Only a workspace admin or owner can install Metagov")

    async def _revoke(self, http: httpx.AsyncClient, token: str) -> None:
        """Give back a token we will not keep, so a refused install leaves nothing behind."""
        with contextlib.suppress(PluginError):  # best effort: the install is refused anyway
            await SlackClient(http, self.app.api_url, token).call("auth.revoke")

    # --- actions ----------------------------------------------------------------------------

    @action("post-message", description="Post to a channel, or to users (opens a DM first)")
    async def post_message(self, ctx: Ctx, params: PostMessage) -> PostedMessage:
        slack = client_for(ctx)
        channel = params.channel
        if channel is None:
            opened = await slack.call("conversations.open", {"users": ",".join(params.users or [])})
            channel = str(opened["channel"]["id"])
        posted = await slack.call(
            "chat.postMessage",
            {
                "channel": channel,
                "text": params.text,
                "blocks": params.blocks,
                "thread_ts": params.thread_ts,
            },
        )
        ts = str(posted["ts"])
        try:
            link = await slack.call("chat.getPermalink", {"channel": channel, "message_ts": ts})
        except PluginError:
            # The message is out; failing now would make a retrying Driver post it twice.
            link = {}
        return PostedMessage(
            channel=str(posted.get("channel", channel)), ts=ts, permalink=link.get("permalink")
        )

    @action("method", description="Call an allowed Slack Web API method as the bot")
    async def method(self, ctx: Ctx, params: MethodCall) -> MethodResult:
        if params.method not in self.app.method_allowlist:
            raise PluginError(
                f"Slack method {params.method!r} is not allowed here "
                "(METAGOV_SLACK__METHOD_ALLOWLIST)",
                code="slack_method_not_allowed",
            )
        response = await client_for(ctx).call(params.method, params.params)
        return MethodResult(response=response)


def _bot_revoked(event: dict[str, Any]) -> bool:
    """Whether a ``tokens_revoked`` event takes the bot's token (users' own tokens don't count)."""
    return bool((event.get("tokens") or {}).get("bot"))


def _action_stamp(payload: dict[str, Any]) -> str | None:
    stamps = [str(a.get("action_ts")) for a in payload.get("actions") or [] if a.get("action_ts")]
    user = (payload.get("user") or {}).get("id", "")
    return f"{user}:{','.join(stamps)}" if stamps else None
