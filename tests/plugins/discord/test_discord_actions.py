"""The actions, as the bot, kept to the community's own server; and Discord's errors and rate
limits as the Driver sees them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.discord.support import (
    API,
    APPLICATION,
    BOT_TOKEN,
    CHANNEL,
    GUILD,
    MESSAGE,
    OTHER_GUILD,
    channel_object,
    guild_object,
    message_object,
)

FOREIGN_CHANNEL = "381870553235193857"


async def act(
    gw: TestGateway, driver: DriverCredentials, slug: str, parameters: dict[str, Any] | None = None
) -> httpx.Response:
    return await gw.client.post(
        f"/api/internal/action/discord.{slug}",
        json={"parameters": parameters or {}},
        headers=driver.to("commons"),
    )


def sent(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


async def test_post_message_checks_the_channel_once_and_posts_as_the_bot(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    channel = api.get(f"{API}/channels/{CHANNEL}").respond(200, json=channel_object())
    posted = api.post(f"{API}/channels/{CHANNEL}/messages").respond(
        200, json=message_object(content="Hello, commons")
    )
    embed = {"title": "Agenda", "description": "1. Budget"}

    first = await act(gw, installed, "post-message", {"channel": CHANNEL, "text": "Hello, commons"})
    second = await act(gw, installed, "post-message", {"channel": CHANNEL, "embeds": [embed]})

    assert first.status_code == 200, first.text
    assert first.json() == {
        "id": MESSAGE,
        "channel_id": CHANNEL,
        "url": f"https://discord.com/channels/{GUILD}/{CHANNEL}/{MESSAGE}",
    }
    assert second.status_code == 200, second.text
    assert channel.call_count == 1  # the channel's server is remembered
    assert json.loads(posted.calls[0].request.content) == {
        "allowed_mentions": {"parse": ["users", "roles"]},
        "content": "Hello, commons",
    }
    assert sent(posted) == {"allowed_mentions": {"parse": ["users", "roles"]}, "embeds": [embed]}
    request = posted.calls.last.request
    assert request.headers["authorization"] == f"Bot {BOT_TOKEN}"
    assert request.headers["user-agent"].startswith("DiscordBot (")


async def test_channels_of_other_servers_are_refused(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    api.get(f"{API}/channels/{FOREIGN_CHANNEL}").respond(
        200, json=channel_object(FOREIGN_CHANNEL, OTHER_GUILD)
    )
    posted = api.post(f"{API}/channels/{FOREIGN_CHANNEL}/messages")

    refused = await act(gw, installed, "post-message", {"channel": FOREIGN_CHANNEL, "text": "hi"})

    assert refused.status_code == 400
    assert refused.json()["code"] == "discord_foreign_channel"
    assert not posted.called
    empty = await act(gw, installed, "post-message", {"channel": CHANNEL})
    assert empty.status_code == 422
    assert "give text or embeds" in empty.json()["detail"]


async def test_server_actions_read_the_guild_and_manage_commands(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    guild = api.get(f"{API}/guilds/{GUILD}").respond(200, json=guild_object())
    api.get(f"{API}/guilds/{GUILD}/channels").respond(
        200,
        json=[
            channel_object(),
            {**channel_object("399942396007890945"), "type": 4, "name": "Governance"},
        ],
    )

    found = await act(gw, installed, "get-guild")
    listed = await act(gw, installed, "list-channels")

    assert found.status_code == 200, found.text
    assert found.json()["id"] == GUILD
    assert found.json()["name"] == "Metagov Test"
    assert found.json()["approximate_member_count"] == 42
    assert guild.calls.last.request.url.params["with_counts"] == "true"
    assert listed.json() == {
        "channels": [
            {
                "id": CHANNEL,
                "name": "governance",
                "type": 0,
                "parent_id": "399942396007890945",
                "position": 6,
            },
            {
                "id": "399942396007890945",
                "name": "Governance",
                "type": 4,
                "parent_id": "399942396007890945",
                "position": 6,
            },
        ]
    }

    commands = f"{API}/applications/{APPLICATION}/guilds/{GUILD}/commands"
    options = [{"type": 3, "name": "title", "description": "What to decide", "required": True}]
    created = api.post(commands).respond(
        201,
        json={
            "id": "1018309491829866567",
            "application_id": APPLICATION,
            "version": "1018309491829866568",
            "default_member_permissions": None,
            "type": 1,
            "name": "propose",
            "description": "Open a proposal",
            "guild_id": GUILD,
            "options": options,
            "nsfw": False,
        },
    )
    deleted = api.delete(f"{commands}/1018309491829866567").respond(204)

    registered = await act(
        gw,
        installed,
        "register-guild-command",
        {"name": "propose", "description": "Open a proposal", "options": options},
    )
    removed = await act(
        gw, installed, "delete-guild-command", {"command_id": "1018309491829866567"}
    )
    shouting = await act(
        gw, installed, "register-guild-command", {"name": "Propose", "description": "x"}
    )

    assert registered.status_code == 200, registered.text
    assert registered.json()["id"] == "1018309491829866567"
    assert registered.json()["guild_id"] == GUILD
    assert sent(created) == {
        "name": "propose",
        "description": "Open a proposal",
        "options": options,
    }
    assert removed.status_code == 204
    assert deleted.called
    assert shouting.status_code == 422


async def test_method_calls_allowed_routes_of_the_own_server_only(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    roles = [{"id": GUILD, "name": "@everyone", "permissions": "1071698660929", "position": 0}]
    api.get(f"{API}/guilds/{GUILD}/roles").respond(200, json=roles)
    api.get(f"{API}/channels/{CHANNEL}").respond(200, json=channel_object())
    api.get(f"{API}/channels/{FOREIGN_CHANNEL}").respond(
        200, json=channel_object(FOREIGN_CHANNEL, OTHER_GUILD)
    )
    reacted = api.put(
        f"{API}/channels/{CHANNEL}/messages/{MESSAGE}/reactions/%F0%9F%91%8D/@me"
    ).respond(204)
    other_server = api.get(f"{API}/guilds/{OTHER_GUILD}/roles")

    ok = await act(gw, installed, "method", {"route": f"/guilds/{GUILD}/roles"})
    reaction = await act(
        gw,
        installed,
        "method",
        {
            "method": "PUT",
            "route": f"/channels/{CHANNEL}/messages/{MESSAGE}/reactions/%F0%9F%91%8D/@me",
        },
    )
    elsewhere = await act(gw, installed, "method", {"route": f"/guilds/{OTHER_GUILD}/roles"})
    unlisted = await act(gw, installed, "method", {"method": "DELETE", "route": f"/guilds/{GUILD}"})
    foreign = await act(gw, installed, "method", {"route": f"/channels/{FOREIGN_CHANNEL}/messages"})
    token = await act(
        gw,
        installed,
        "method",
        {"route": f"/guilds/{GUILD}/roles", "headers": {"Authorization": "Bot other"}},
    )
    query = await act(gw, installed, "method", {"route": f"/guilds/{GUILD}/roles?x=1"})

    assert ok.status_code == 200, ok.text
    assert ok.json() == {"status": 200, "response": roles}
    assert reaction.json() == {"status": 204, "response": None}
    assert reacted.calls.last.request.headers["authorization"] == f"Bot {BOT_TOKEN}"
    assert elsewhere.status_code == unlisted.status_code == 400
    assert elsewhere.json()["code"] == unlisted.json()["code"] == "discord_route_not_allowed"
    assert not other_server.called
    assert foreign.json()["code"] == "discord_foreign_channel"
    assert token.status_code == query.status_code == 422


async def test_discord_errors_are_clear_and_never_show_the_token(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    api.get(f"{API}/channels/{CHANNEL}").respond(200, json=channel_object())
    messages = api.post(f"{API}/channels/{CHANNEL}/messages")
    cases: list[tuple[httpx.Response | Exception, int, str, str]] = [
        (
            httpx.Response(404, json={"message": "Unknown Channel", "code": 10003}),
            400,
            "discord_error",
            "Unknown Channel (Discord error 10003, HTTP 404)",
        ),
        (
            httpx.Response(403, json={"message": "Missing Permissions", "code": 50013}),
            400,
            "discord_error",
            "Missing Permissions (Discord error 50013",
        ),
        (
            httpx.Response(
                400,
                json={
                    "code": 50035,
                    "message": "Invalid Form Body",
                    "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}},
                },
            ),
            400,
            "discord_error",
            "Invalid Form Body (Discord error 50035",
        ),
        (
            httpx.Response(401, json={"message": "401: Unauthorized", "code": 0}),
            502,
            "discord_unauthorized",
            "401: Unauthorized",
        ),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), 502, "upstream_error", "502"),
        (httpx.ConnectError("connection refused"), 502, "upstream_error", "ConnectError"),
    ]
    for answer, status, code, words in cases:
        if isinstance(answer, Exception):
            messages.mock(side_effect=answer)
        else:
            messages.mock(return_value=answer)
        response = await act(gw, installed, "post-message", {"channel": CHANNEL, "text": "x"})
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert words in response.json()["detail"]
        assert BOT_TOKEN not in response.text


async def test_rate_limits_are_waited_out_or_honoured_without_asking_discord_again(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    api.get(f"{API}/channels/{CHANNEL}").respond(200, json=channel_object())
    guild = api.get(f"{API}/guilds/{GUILD}")  # the route enabling the plugin used, once
    before = guild.call_count
    # A short wait is waited out, and the request sent again.
    guild.side_effect = [
        httpx.Response(
            429,
            json={"message": "You are being rate limited.", "retry_after": 0.01, "global": False},
        ),
        httpx.Response(200, json=guild_object()),
    ]
    found = await act(gw, installed, "get-guild")
    assert found.status_code == 200, found.text
    assert guild.call_count == before + 2

    # A route's limit holds that route only.
    guild.side_effect = None
    guild.respond(200, json=guild_object())
    limited = api.post(f"{API}/channels/{CHANNEL}/messages").respond(
        429,
        headers={
            "Retry-After": "65",
            "X-RateLimit-Bucket": "abcd1234",
            "X-RateLimit-Scope": "user",
        },
        json={"message": "You are being rate limited.", "retry_after": 64.57, "global": False},
    )
    first = await act(gw, installed, "post-message", {"channel": CHANNEL, "text": "x"})
    again = await act(gw, installed, "post-message", {"channel": CHANNEL, "text": "x"})
    other_route = await act(gw, installed, "get-guild")
    assert first.status_code == again.status_code == 429
    assert first.json()["code"] == "rate_limited"
    assert first.headers["retry-after"] == "65"
    assert int(again.headers["retry-after"]) in (64, 65)
    assert limited.call_count == 1  # the second was refused here, not sent
    assert other_route.status_code == 200
    assert guild.call_count == before + 3

    # The global limit holds every route.
    api.get(f"{API}/guilds/{GUILD}/roles").respond(
        429,
        headers={"Retry-After": "65", "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"},
        json={"message": "You are being rate limited.", "retry_after": 64.57, "global": True},
    )
    channels = api.get(f"{API}/guilds/{GUILD}/channels").respond(200, json=[])
    globally = await act(gw, installed, "method", {"route": f"/guilds/{GUILD}/roles"})
    held = await act(gw, installed, "list-channels")
    assert globally.status_code == held.status_code == 429
    assert "global" in held.json()["detail"]
    assert not channels.called
