"""Fixtures of the Discord tests: a gateway serving the plugin with test settings, Discord and
the Driver mocked at the HTTP boundary, and a community whose server is installed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from metagov.plugins.discord import DiscordPlugin
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings
from tests.plugins.discord.support import (
    API,
    BASE_URL,
    DISCORD_CONFIG,
    DONE,
    EVENTS,
    GUILD,
    discord_settings,
    guild_object,
)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """Discord and the Driver's event URL; any other outbound request fails the test."""
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def gw(database_url: str, api: respx.MockRouter) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(DiscordPlugin, source="builtin:discord", settings=discord_settings())
    settings = make_settings(database_url, auth_redirect_allowlist=DONE, base_url=BASE_URL)
    async with open_gateway(settings, registry) as gateway:
        yield gateway


@pytest.fixture
async def driver(gw: TestGateway, api: respx.MockRouter) -> DriverCredentials:
    api.post(EVENTS).respond(204)
    alice = await gw.create_driver("alice", event_url=EVENTS)
    await gw.create_community(alice, "commons")
    return alice


@pytest.fixture
async def installed(
    gw: TestGateway, driver: DriverCredentials, api: respx.MockRouter
) -> DriverCredentials:
    """``commons`` with its Discord server enabled (as the OAuth install would write it)."""
    api.get(f"{API}/guilds/{GUILD}").respond(200, json=guild_object())
    enabled = await gw.client.post(
        "/api/internal/plugin/discord", json=DISCORD_CONFIG, headers=driver.to("commons")
    )
    assert enabled.status_code == 201, enabled.text
    return driver
