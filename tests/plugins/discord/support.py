"""What the Discord tests share: the application's settings, a key pair to sign interactions the
way Discord does, and payloads shaped like the ones Discord documents."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from metagov.plugins.discord.access import install_proof
from metagov.plugins.discord.schemas import DiscordSettings

API = "https://discord.test/api/v10"
AUTHORIZE = "https://discord.test/oauth2/authorize"
BASE_URL = "https://metagov.test"
EVENTS = "https://driver.test/events"
DONE = "https://driver.test/discord/done"
APPLICATION = "290926444748734465"
CLIENT_SECRET = "937it3ow87i4ery69876wqire"
BOT_TOKEN = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"
GUILD = "290926798626357999"
OTHER_GUILD = "197038439483310086"
CHANNEL = "345626669114982999"
MESSAGE = "844397162624450620"

SIGNER = Ed25519PrivateKey.generate()
PUBLIC_KEY = SIGNER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
PROOF = install_proof(CLIENT_SECRET, GUILD)
DISCORD_CONFIG = {"guild_id": GUILD, "guild_name": "Metagov Test", "install_proof": PROOF}


def discord_settings(**overrides: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "client_id": APPLICATION,
        "client_secret": CLIENT_SECRET,
        "bot_token": BOT_TOKEN,
        "public_key": PUBLIC_KEY,
        "api_url": API,
        "oauth_url": AUTHORIZE,
        **overrides,
    }
    return DiscordSettings(_env_file=None, **values)  # type: ignore[call-arg]


def signed(
    body: bytes, *, stamp: int | None = None, signer: Ed25519PrivateKey = SIGNER
) -> dict[str, str]:
    """The headers Discord sends: an Ed25519 signature over timestamp + body, hex."""
    timestamp = str(int(time.time()) if stamp is None else stamp)
    signature = signer.sign(timestamp.encode() + body).hex()
    return {
        "X-Signature-Ed25519": signature,
        "X-Signature-Timestamp": timestamp,
        "Content-Type": "application/json",
        "User-Agent": "Discord-Interactions/1.0 (+https://discord.com)",
    }


async def interact(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await client.post("/api/hooks/discord", content=body, headers=signed(body))


def user(user_id: str, name: str) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name,
        "global_name": name.title(),
        "avatar": "a_d5efa99b3eeaa7dd43acca82f5692432",
        "discriminator": "0",
        "public_flags": 131141,
    }


def member(user_id: str, name: str) -> dict[str, Any]:
    return {
        "user": user(user_id, name),
        "roles": ["539082325061836999"],
        "premium_since": None,
        "permissions": "2147483647",
        "pending": False,
        "nick": None,
        "mute": False,
        "joined_at": "2017-03-13T19:19:14.040000+00:00",
        "is_pending": False,
        "deaf": False,
    }


def ping() -> dict[str, Any]:
    return {
        "application_id": APPLICATION,
        "id": "1100000000000000001",
        "token": "aW50ZXJhY3Rpb246MTEwMDAwMDAwMDAwMDAwMDAwMTpwaW5n",
        "type": 1,
        "user": user("53908232506183680", "mason"),
        "version": 1,
    }


def slash_command(
    interaction_id: str = "786008729715212338",
    *,
    guild: str | None = GUILD,
    options: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": 2,
        "token": "A_UNIQUE_TOKEN_FOR_" + interaction_id,
        "member": member("53908232506183680", "mason"),
        "id": interaction_id,
        "application_id": APPLICATION,
        "guild_id": guild,
        "app_permissions": "442368",
        "guild_locale": "en-US",
        "locale": "en-US",
        "data": {
            "options": options
            if options is not None
            else [{"type": 3, "name": "cardname", "value": "The Gitrog Monster"}],
            "type": 1,
            "name": "cardsearch",
            "id": "771825006014889984",
        },
        "channel_id": "645027906669510667",
        "version": 1,
    }
    if guild is None:
        del payload["guild_id"]
        payload["user"] = payload.pop("member")["user"]
    return payload


def click(
    interaction_id: str,
    user_id: str,
    custom_id: str,
    *,
    message_id: str = MESSAGE,
    name: str = "voter",
) -> dict[str, Any]:
    """A button click, shaped like Discord's sample component interaction."""
    return {
        "version": 1,
        "type": 3,
        "token": f"interaction-token-{interaction_id}",
        "message": {
            "type": 0,
            "tts": False,
            "timestamp": "2021-05-19T02:12:51.710000+00:00",
            "pinned": False,
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "id": message_id,
            "flags": 0,
            "embeds": [],
            "edited_timestamp": None,
            "content": "",
            "components": [],
            "channel_id": CHANNEL,
            "author": {
                "username": "Metagov",
                "public_flags": 0,
                "id": APPLICATION,
                "discriminator": "0",
                "avatar": None,
                "bot": True,
            },
            "attachments": [],
        },
        "member": member(user_id, name),
        "id": interaction_id,
        "guild_id": GUILD,
        "data": {"custom_id": custom_id, "component_type": 2},
        "channel_id": CHANNEL,
        "application_id": APPLICATION,
        "app_permissions": "442368",
        "locale": "en-US",
        "guild_locale": "en-US",
    }


def guild_object(guild_id: str = GUILD, name: str = "Metagov Test") -> dict[str, Any]:
    return {
        "id": guild_id,
        "name": name,
        "icon": None,
        "description": None,
        "splash": None,
        "discovery_splash": None,
        "features": [],
        "emojis": [],
        "banner": None,
        "owner_id": "53908232506183680",
        "application_id": None,
        "region": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "system_channel_id": None,
        "widget_enabled": False,
        "widget_channel_id": None,
        "verification_level": 0,
        "roles": [],
        "default_message_notifications": 1,
        "mfa_level": 0,
        "explicit_content_filter": 0,
        "max_presences": None,
        "max_members": 250000,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "system_channel_flags": 0,
        "preferred_locale": "en-US",
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "approximate_member_count": 42,
        "approximate_presence_count": 7,
    }


def channel_object(channel_id: str = CHANNEL, guild_id: str = GUILD) -> dict[str, Any]:
    return {
        "id": channel_id,
        "type": 0,
        "guild_id": guild_id,
        "position": 6,
        "permission_overwrites": [],
        "name": "governance",
        "topic": "Proposals and votes",
        "nsfw": False,
        "last_message_id": "155117677105512449",
        "rate_limit_per_user": 0,
        "parent_id": "399942396007890945",
    }


def message_object(
    message_id: str = MESSAGE, channel_id: str = CHANNEL, **extra: Any
) -> dict[str, Any]:
    return {
        "id": message_id,
        "channel_id": channel_id,
        "type": 0,
        "author": {
            "id": APPLICATION,
            "username": "Metagov",
            "avatar": None,
            "discriminator": "0",
            "public_flags": 0,
            "bot": True,
        },
        "content": "",
        "timestamp": "2024-05-19T02:12:51.710000+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "flags": 0,
        "components": [],
        **extra,
    }


def driver_events(route: Any) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]
