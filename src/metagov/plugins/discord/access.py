"""Keeping each community to its own Discord server.

One bot serves every community, so its token reaches every server that installed it. A channel id
or a route a Driver sends is therefore checked against the community's server before the bot uses
it; without this, one community's Driver could post into, or read, another's server.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from metagov.plugins.discord.client import DiscordClient
from metagov.plugins.discord.schemas import DiscordConfig
from metagov.plugins.sdk import PluginContext, PluginError

KNOWN_CHANNELS = "known_channels"
MAX_KNOWN_CHANNELS = 200


def install_proof(client_secret: str, guild_id: str) -> str:
    """What the OAuth install writes into the config to show the server's admin added the bot
    for this community: only the gateway, which holds the client secret, can compute it."""
    message = f"discord-install:{guild_id}".encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha256).hexdigest()


async def ensure_channel(
    ctx: PluginContext[DiscordConfig], client: DiscordClient, channel_id: str
) -> None:
    """Refuse a channel that is not in the community's server. Channels never move between
    servers, so a channel seen once is remembered in the instance's state."""
    known: list[str] = list(ctx.state.get(KNOWN_CHANNELS, []))
    if channel_id in known:
        return
    channel: Any = await client.bot("GET", f"/channels/{channel_id}")
    guild = str(channel.get("guild_id", "")) if isinstance(channel, dict) else ""
    if guild != ctx.config.guild_id:
        raise PluginError(
            f"channel {channel_id} is not in this community's Discord server",
            code="discord_foreign_channel",
        )
    known.append(channel_id)
    ctx.state.set(KNOWN_CHANNELS, known[-MAX_KNOWN_CHANNELS:])
