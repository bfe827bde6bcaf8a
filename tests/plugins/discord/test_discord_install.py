"""Installing a server through OAuth (bot + applications.commands, the callback's guild_id
checked against Discord's answer), logging a user in, and refusing hand-written configs."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.discord.support import (
    API,
    APPLICATION,
    AUTHORIZE,
    BOT_TOKEN,
    CLIENT_SECRET,
    DISCORD_CONFIG,
    DONE,
    GUILD,
    OTHER_GUILD,
    PROOF,
    guild_object,
)

USER_TOKEN = "6qrZcUqja7812RVdnEKjpzOL4CvHBFG"


async def authorize(
    gw: TestGateway, driver: DriverCredentials, kind: str = "app"
) -> dict[str, list[str]]:
    answer = await gw.start_install(
        driver, "discord", "commons", redirect_uri=DONE, state="driver-state-1", kind=kind
    )
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == AUTHORIZE
    assert "+" not in location.query  # spaces are %20, as in Discord's examples
    return parse_qs(location.query)


def token_response(guild: dict[str, Any] | None) -> dict[str, Any]:
    granted: dict[str, Any] = {
        "token_type": "Bearer",
        "access_token": USER_TOKEN,
        "scope": "bot applications.commands",
        "expires_in": 604800,
        "refresh_token": "mgp8qnvBwJcmadwgCYKyYD5CAzGAX4",
    }
    if guild is not None:
        granted["guild"] = guild
    return granted


async def callback(gw: TestGateway, state: str, **params: str) -> dict[str, list[str]]:
    answer = await gw.client.get(f"/auth/discord/callback?{urlencode({**params, 'state': state})}")
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == DONE
    assert BOT_TOKEN not in answer.headers["location"]
    assert USER_TOKEN not in answer.headers["location"]
    return parse_qs(location.query)


async def discord_instances(gw: TestGateway, driver: DriverCredentials) -> list[dict[str, Any]]:
    community = await gw.client.get("/api/internal/community/commons", headers=driver.headers)
    return [p for p in community.json()["plugins"] if p["name"] == "discord"]


async def test_install_adds_the_server_the_callback_names(
    gw: TestGateway, driver: DriverCredentials, api: respx.MockRouter
) -> None:
    query = await authorize(gw, driver)
    assert query["client_id"] == [APPLICATION]
    assert query["scope"] == ["bot applications.commands"]
    assert query["permissions"] == ["85056"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["https://metagov.test/auth/discord/callback"]
    exchanged = api.post(f"{API}/oauth2/token").respond(
        200, json=token_response(guild_object(name="SomeTest"))
    )
    guild = api.get(f"{API}/guilds/{GUILD}").respond(200, json=guild_object(name="SomeTest"))

    back = await callback(
        gw,
        query["state"][0],
        code="NhhvTDYsFcdgNLnnLijcl7Ku7bEEeee",
        guild_id=GUILD,
        permissions="85056",
    )

    assert back == {"community": ["commons"], "state": ["driver-state-1"]}
    sent = exchanged.calls.last.request
    basic = base64.b64encode(f"{APPLICATION}:{CLIENT_SECRET}".encode()).decode()
    assert sent.headers["authorization"] == f"Basic {basic}"
    assert parse_qs(sent.content.decode()) == {
        "grant_type": ["authorization_code"],
        "code": ["NhhvTDYsFcdgNLnnLijcl7Ku7bEEeee"],
        "redirect_uri": ["https://metagov.test/auth/discord/callback"],
    }
    assert guild.calls.last.request.headers["authorization"] == f"Bot {BOT_TOKEN}"
    [instance] = await discord_instances(gw, driver)
    assert instance["community_platform_id"] == GUILD
    assert instance["config"] == {"guild_id": GUILD, "guild_name": "SomeTest"}
    assert instance["secrets_set"] == ["install_proof"]

    # Installed again, with a token response that does not name the server (the bot does not
    # require the code grant): the callback's guild_id names it; the same instance is updated.
    exchanged.respond(200, json=token_response(None))
    guild.respond(200, json=guild_object(name="Renamed"))
    query = await authorize(gw, driver)
    back = await callback(gw, query["state"][0], code="second-code", guild_id=GUILD)
    assert back == {"community": ["commons"], "state": ["driver-state-1"]}
    [again] = await discord_instances(gw, driver)
    assert (again["id"], again["config"]["guild_name"]) == (instance["id"], "Renamed")


async def test_install_errors_go_back_to_the_driver(
    gw: TestGateway, driver: DriverCredentials, api: respx.MockRouter
) -> None:
    token = api.post(f"{API}/oauth2/token")
    api.get(f"{API}/guilds/{OTHER_GUILD}").respond(
        404, json={"message": "Unknown Guild", "code": 10004}
    )
    cases: list[tuple[str, dict[str, str], httpx.Response | None]] = [
        ("access_denied", {"error": "access_denied", "guild_id": GUILD}, None),
        ("missing_code", {"guild_id": GUILD}, None),
        (
            "invalid_grant",
            {"code": "used", "guild_id": GUILD},
            httpx.Response(
                400, json={"error": "invalid_grant", "error_description": 'Invalid "code".'}
            ),
        ),
        (
            "guild_mismatch",  # the URL was edited to name another server
            {"code": "c", "guild_id": OTHER_GUILD},
            httpx.Response(200, json=token_response(guild_object())),
        ),
        ("no_guild", {"code": "c"}, httpx.Response(200, json=token_response(None))),
        (
            "bot_not_in_guild",
            {"code": "c", "guild_id": OTHER_GUILD},
            httpx.Response(200, json=token_response(None)),
        ),
        ("upstream_error", {"code": "c", "guild_id": GUILD}, httpx.Response(503)),
    ]
    for error, params, answer in cases:
        if answer is not None:
            token.mock(return_value=answer)
        query = await authorize(gw, driver)
        back = await callback(gw, query["state"][0], **params)
        assert back["error"] == [error], back
        assert back["error_description"][0]
        assert back["state"] == ["driver-state-1"]
    assert await discord_instances(gw, driver) == []


async def test_user_login_returns_the_discord_user_id(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    query = await authorize(gw, installed, "user")
    assert query["scope"] == ["identify"]
    assert "permissions" not in query
    api.post(f"{API}/oauth2/token").respond(
        200,
        json={
            "access_token": USER_TOKEN,
            "token_type": "Bearer",
            "expires_in": 604800,
            "refresh_token": "D43f5y0ahjqew82jZ4NViEr2YafMKhue",
            "scope": "identify",
        },
    )
    me = api.get(f"{API}/users/@me").respond(
        200,
        json={
            "id": "80351110224678912",
            "username": "nelly",
            "discriminator": "0",
            "global_name": "Nelly",
            "avatar": "8342729096ea3675442027381ff50dfe",
        },
    )

    back = await callback(gw, query["state"][0], code="login-code")

    [person] = back.pop("metagov_id")  # the login linked the account to a new MetagovID
    assert person.startswith("mgid_")
    assert back == {
        "community": ["commons"],
        "user_id": ["80351110224678912"],
        "state": ["driver-state-1"],
    }
    assert me.calls.last.request.headers["authorization"] == f"Bearer {USER_TOKEN}"


async def test_a_hand_written_config_needs_the_install_proof(
    gw: TestGateway, driver: DriverCredentials, api: respx.MockRouter
) -> None:
    """One bot serves every server: naming a server is not enough to take it over."""
    api.get(f"{API}/guilds/{GUILD}").respond(200, json=guild_object())
    headers = driver.to("commons")
    guessed = {"guild_id": GUILD, "install_proof": "0" * 64}
    refused = await gw.client.post("/api/internal/plugin/discord", json=guessed, headers=headers)
    assert refused.status_code == 400
    assert refused.json()["code"] == "discord_install_proof"
    other = {"guild_id": OTHER_GUILD, "install_proof": PROOF}  # another server's proof
    refused = await gw.client.post("/api/internal/plugin/discord", json=other, headers=headers)
    assert refused.status_code == 400
    missing = await gw.client.post(
        "/api/internal/plugin/discord", json={"guild_id": GUILD}, headers=headers
    )
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == ["body", "install_proof"]
    assert await discord_instances(gw, driver) == []

    enabled = await gw.client.post(
        "/api/internal/plugin/discord", json=DISCORD_CONFIG, headers=headers
    )
    assert enabled.status_code == 201, enabled.text
    assert PROOF not in enabled.text


async def test_a_server_the_bot_is_not_in_is_refused(
    gw: TestGateway, driver: DriverCredentials, api: respx.MockRouter
) -> None:
    api.get(f"{API}/guilds/{GUILD}").respond(403, json={"message": "Missing Access", "code": 50001})
    refused = await gw.client.post(
        "/api/internal/plugin/discord", json=DISCORD_CONFIG, headers=driver.to("commons")
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "discord_bot_not_in_guild"
    assert "Missing Access" in refused.json()["detail"]
