"""The Discord plugin: one Discord application (and its bot) serves every community; each
community's server (guild) is an instance (``community_platform_id`` = guild id) installed
through OAuth.

Discord posts every interaction to one Interactions endpoint, ``/api/hooks/discord``, and wants
an answer within three seconds. Each request's Ed25519 signature and timestamp are checked before
anything is stored; the answer is given at once (a PONG, an ephemeral acknowledgement of a slash
command, a deferred update of a clicked message) and the rest happens in a job: slash commands
become Driver events, clicks become votes.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from metagov.plugins.discord import interactions
from metagov.plugins.discord.access import ensure_channel, install_proof
from metagov.plugins.discord.client import DiscordApiError, DiscordClient, OAuthRefused, client_for
from metagov.plugins.discord.interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    EPHEMERAL,
    MESSAGE_COMPONENT,
    PING,
    PONG,
)
from metagov.plugins.discord.schemas import (
    INSTALL_SCOPES,
    LOGIN_SCOPES,
    Channel,
    Channels,
    Command,
    DeleteCommand,
    DiscordConfig,
    DiscordSettings,
    Guild,
    MethodCall,
    MethodResult,
    NoParams,
    PostedMessage,
    PostMessage,
    RegisterCommand,
    SlashCommandEvent,
)
from metagov.plugins.discord.votes import Vote, message_url
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

Ctx = PluginContext[DiscordConfig]
GUILD_ONLY = "Metagov commands work in servers only."
NOT_HANDLED = "This interaction is not handled here."
# Discord JSON codes meaning the bot cannot see a server: Unknown Guild, Missing Access.
NOT_IN_GUILD = frozenset({10004, 50001})


def _ephemeral(text: str) -> WebhookReply:
    return WebhookReply({"type": CHANNEL_MESSAGE, "data": {"content": text, "flags": EPHEMERAL}})


class DiscordPlugin(Plugin[DiscordConfig]):
    """Discord servers: slash commands, messages and button votes."""

    name = "discord"
    auth_type = AuthType.OAUTH
    config_model = DiscordConfig
    community_platform_id_field = "guild_id"
    webhooks = WebhookScope.PLATFORM
    settings_model = DiscordSettings
    processes = (Vote,)
    event_types = (
        EventType(
            "slash_command",
            "A member used one of the app's slash commands in the server",
            SlashCommandEvent,
        ),
    )

    @property
    def app(self) -> DiscordSettings:
        settings: DiscordSettings = self.settings
        return settings

    # --- the Interactions endpoint ------------------------------------------------------------

    async def verify_webhook(
        self, request: WebhookRequest, config: DiscordConfig | None
    ) -> WebhookAccepted:
        key = self.app.verify_key()
        if key is None:
            raise WebhookRejected("public_key_not_configured")
        interactions.verify(request, key)
        body = interactions.parse(request)
        if body is None:
            raise WebhookRejected("bad_payload")
        return self._answer(body)

    def _answer(self, body: dict[str, Any]) -> WebhookAccepted:
        """What Discord gets at once for an authentic interaction, and whether to keep it for the
        job (under its interaction id, so a repeat is one event)."""
        kind = body["type"]
        if kind == PING:
            return WebhookAccepted(store=False, reply=WebhookReply({"type": PONG}))
        guild = str(body.get("guild_id") or "")
        interaction_id = str(body.get("id") or "") or None
        if kind == APPLICATION_COMMAND:
            if not guild:
                return WebhookAccepted(store=False, reply=_ephemeral(GUILD_ONLY))
            name, _ = interactions.command_and_options(interactions.mapping(body.get("data")))
            text = self.app.command_reply.replace("{command}", name)[:2000]
            return WebhookAccepted(
                delivery_id=interaction_id, community_platform_id=guild, reply=_ephemeral(text)
            )
        if kind == MESSAGE_COMPONENT:
            reply = WebhookReply({"type": DEFERRED_UPDATE_MESSAGE})
            if not guild:
                return WebhookAccepted(store=False, reply=reply)
            return WebhookAccepted(
                delivery_id=interaction_id, community_platform_id=guild, reply=reply
            )
        if kind == AUTOCOMPLETE:
            reply = WebhookReply({"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}})
            return WebhookAccepted(store=False, reply=reply)
        return WebhookAccepted(store=False, reply=_ephemeral(NOT_HANDLED))

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str] | None:
        """A click concerns the vote whose message it was on; nothing else concerns a vote."""
        body = interactions.parse(webhook)
        message_id = interactions.component_message_id(body) if body else None
        return [message_id] if message_id else []

    async def receive_webhook(self, ctx: Ctx, webhook: WebhookRequest) -> None:
        body = interactions.parse(webhook)
        if body is None or body.get("type") != APPLICATION_COMMAND:
            return  # clicks are the votes' business
        data = interactions.mapping(body.get("data"))
        command, options = interactions.command_and_options(data)
        user = interactions.invoker(body)
        event = SlashCommandEvent(
            command=command,
            options=options,
            channel_id=_str_or_none(body.get("channel_id")),
            guild_id=str(body.get("guild_id")),
            user={k: user.get(k) for k in ("id", "username", "global_name")},
            interaction_id=str(body.get("id")),
            command_id=_str_or_none(data.get("id")),
        )
        ctx.emit_event(
            "slash_command",
            event.model_dump(),
            {
                "user_id": _str_or_none(user.get("id")),
                "provider": "discord",
                "is_metagov_bot": False,
            },
        )

    # --- OAuth ---------------------------------------------------------------------------------

    def oauth_authorize_url(self, *, kind: str, redirect_uri: str, state: str) -> str:
        if not self.app.client_id:
            raise PluginError("the Discord app is not configured (METAGOV_DISCORD__CLIENT_ID)")
        query: dict[str, str] = {
            "client_id": self.app.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "state": state,
        }
        if kind == "app":
            query["scope"] = " ".join(INSTALL_SCOPES)
            query["permissions"] = str(self.app.permissions)
            query["integration_type"] = "0"  # installed to a server, not to a user
        else:
            query["scope"] = " ".join(LOGIN_SCOPES)
        return f"{self.app.oauth_url}?{urlencode(query, quote_via=quote)}"

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
        if not app.client_id or app.client_secret is None:
            raise OAuthError("not_configured", "The Discord app is not configured")
        if not code:
            raise OAuthError("missing_code", "Discord sent no authorization code")
        client = DiscordClient(http, app)
        try:
            granted = await client.oauth_token(
                {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
                httpx.BasicAuth(app.client_id, app.client_secret.get_secret_value()),
            )
        except OAuthRefused as exc:
            raise OAuthError(exc.error, "Discord refused the authorization code") from None
        access = str(granted.get("access_token") or "")
        if kind == "user":
            me = await client.as_user("/users/@me", access)
            user_id = str(me.get("id") or "") if isinstance(me, dict) else ""
            if not user_id:
                raise OAuthError("no_user", "Discord did not say who logged in")
            return OAuthInstall(None, {}, user_id)
        guild_id = await self._installed_guild(params, granted)
        try:
            guild = await client.bot("GET", f"/guilds/{guild_id}")
        except DiscordApiError as exc:
            if exc.discord_code in NOT_IN_GUILD or exc.status in (403, 404):
                raise OAuthError("bot_not_in_guild", "The bot is not in that server") from None
            raise
        config = {
            "guild_id": guild_id,
            "guild_name": str(guild.get("name", ""))[:100],
            "install_proof": install_proof(app.client_secret.get_secret_value(), guild_id),
        }
        return OAuthInstall(guild_id, config)

    async def _installed_guild(self, params: Mapping[str, str], granted: Mapping[str, Any]) -> str:
        """The server the bot was added to: the callback's ``guild_id``. Anyone can edit a URL,
        so when the token response names the server too (it does when the bot requires the OAuth2
        code grant), the two must agree; the bot must then be able to read it."""
        hinted = params.get("guild_id") or ""
        granted_guild = granted.get("guild")
        confirmed = str(granted_guild.get("id") or "") if isinstance(granted_guild, dict) else ""
        if hinted and confirmed and hinted != confirmed:
            raise OAuthError("guild_mismatch", "The callback names another server than Discord")
        guild_id = hinted or confirmed
        if not guild_id.isdigit() or len(guild_id) > 20:
            raise OAuthError("no_guild", "Discord did not say which server the bot was added to")
        return guild_id

    # --- the instance ---------------------------------------------------------------------------

    async def initialize(self, ctx: Ctx) -> None:
        """Refuse a config the OAuth install did not write (its proof is wrong), and a server the
        bot cannot see."""
        secret = self.app.client_secret
        if secret is None:
            raise PluginError("the Discord app is not configured (METAGOV_DISCORD__CLIENT_SECRET)")
        expected = install_proof(secret.get_secret_value(), ctx.config.guild_id)
        given = ctx.config.install_proof.get_secret_value()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise PluginError(
                "install_proof does not match this server: install Discord through "
                "/auth/discord/authorize",
                code="discord_install_proof",
            )
        try:
            await client_for(ctx.http, ctx.settings).bot("GET", f"/guilds/{ctx.config.guild_id}")
        except DiscordApiError as exc:
            if exc.discord_code in NOT_IN_GUILD or exc.status in (403, 404):
                raise PluginError(
                    f"the bot is not in Discord server {ctx.config.guild_id}: {exc.message}",
                    code="discord_bot_not_in_guild",
                ) from None
            raise

    # --- actions ------------------------------------------------------------------------------

    @action("post-message", description="Post a message (text and/or embeds) to a channel")
    async def post_message(self, ctx: Ctx, params: PostMessage) -> PostedMessage:
        client = client_for(ctx.http, ctx.settings)
        await ensure_channel(ctx, client, params.channel)
        body: dict[str, Any] = {"allowed_mentions": {"parse": ["users", "roles"]}}
        if params.text is not None:
            body["content"] = params.text
        if params.embeds is not None:
            body["embeds"] = params.embeds
        posted = await client.bot("POST", f"/channels/{params.channel}/messages", json=body)
        channel = str(posted.get("channel_id") or params.channel)
        message_id = str(posted["id"])
        return PostedMessage(
            id=message_id,
            channel_id=channel,
            url=message_url(ctx.config.guild_id, channel, message_id),
        )

    @action("get-guild", description="The community's server, as Discord describes it")
    async def get_guild(self, ctx: Ctx, params: NoParams) -> Guild:
        found = await client_for(ctx.http, ctx.settings).bot(
            "GET", f"/guilds/{ctx.config.guild_id}", params={"with_counts": "true"}
        )
        return Guild.model_validate(found)

    @action("list-channels", description="The channels of the community's server")
    async def list_channels(self, ctx: Ctx, params: NoParams) -> Channels:
        found = await client_for(ctx.http, ctx.settings).bot(
            "GET", f"/guilds/{ctx.config.guild_id}/channels"
        )
        channels = [Channel.model_validate(c) for c in found or [] if isinstance(c, dict)]
        ctx.state.set("known_channels", [c.id for c in channels][-200:])
        return Channels(channels=channels)

    @action(
        "register-guild-command",
        description="Create (or replace, by name) a slash command in the community's server",
    )
    async def register_guild_command(self, ctx: Ctx, params: RegisterCommand) -> Command:
        body = params.model_dump(exclude_none=True)
        created = await client_for(ctx.http, ctx.settings).bot(
            "POST", f"{self._commands(ctx)}", json=body
        )
        return Command.model_validate(created)

    @action("delete-guild-command", description="Delete a slash command from the server")
    async def delete_guild_command(self, ctx: Ctx, params: DeleteCommand) -> None:
        await client_for(ctx.http, ctx.settings).bot(
            "DELETE", f"{self._commands(ctx)}/{params.command_id}"
        )

    def _commands(self, ctx: Ctx) -> str:
        if not self.app.client_id:
            raise PluginError("the Discord app is not configured (METAGOV_DISCORD__CLIENT_ID)")
        return f"/applications/{self.app.client_id}/guilds/{ctx.config.guild_id}/commands"

    @action("method", description="Call an allowed Discord REST route of the server as the bot")
    async def method(self, ctx: Ctx, params: MethodCall) -> MethodResult:
        client = client_for(ctx.http, ctx.settings)
        channels = self._allowed(ctx, params)
        for channel in channels:
            await ensure_channel(ctx, client, channel)
        response = await client.bot(
            params.method, params.route, json=params.body, params=params.query
        )
        return MethodResult(status=200 if response is not None else 204, response=response)

    def _allowed(self, ctx: Ctx, params: MethodCall) -> list[str]:
        """Match the route against the allow-list; returns the channel ids it names, which must
        then be checked. Refuses routes of other servers and other applications."""
        segments = params.route.strip("/").split("/")
        refused = PluginError(
            f"Discord route {params.method} {params.route} is not allowed here "
            "(METAGOV_DISCORD__METHOD_ALLOWLIST, in the community's own server)",
            code="discord_route_not_allowed",
        )
        for entry in self.app.method_allowlist:
            verb, _, template = entry.partition(" ")
            if verb.upper() != params.method:
                continue
            pattern = template.strip().strip("/").split("/")
            if len(pattern) != len(segments):
                continue
            channels = _match(pattern, segments, ctx.config.guild_id, self.app.client_id)
            if channels is not None:
                return channels
        raise refused


def _match(
    pattern: list[str], segments: list[str], guild_id: str, application_id: str | None
) -> list[str] | None:
    """The channel ids of ``segments`` if they fit ``pattern`` (None if not)."""
    channels: list[str] = []
    for want, got in zip(pattern, segments, strict=True):
        if want == "{guild}":
            if got != guild_id:
                return None
        elif want == "{application}":
            if not application_id or got != application_id:
                return None
        elif want == "{channel}":
            if not got.isdigit():
                return None
            channels.append(got)
        elif want == "{id}":
            if not got.isdigit():
                return None
        elif want == "{emoji}":
            if got in (".", ".."):
                return None
        elif want != got:
            return None
    return channels


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
