"""A gateway serving ``x`` and ``twitter`` with test settings, a mocked X at https://x.test and a
Driver whose events are posted to a mocked URL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from metagov.config import Settings
from metagov.plugins.twitter import TwitterPlugin
from metagov.plugins.x import XPlugin
from metagov.plugins.x.schemas import XSettings
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings

API = "https://x.test"
AUTHORIZE = "https://x.test/i/oauth2/authorize"
DONE = "https://driver.test/x/done"
EVENTS = "https://driver.test/events"
BASE = "https://metagov.test"
CLIENT_ID = "M1M5R3BMVy13QmpScXkzTUt5OE46MTpjaQ"
CLIENT_SECRET = "x-client-secret-value"
ACCOUNT = {"id": "2244994945", "name": "X Dev", "username": "TwitterDev"}
ACCESS = (
    "bWRWa3gzdnk3WHRGU1o0bmRRcTJ5VUxWX1lZTDdJSUtmaWcxbTVxdEFXcW5tOjE2MjIxNDc3NDM5MTQ6MToxOmF0OjE"
)
REFRESH = (
    "bWRWa3gzdnk3WHRGU1o0bmRRcTJ5VUxWX1lZTDdJSUtmaWcxbTVxdEFXcW5tOjE2MjIxNDc3NDM5MTQ6MToxOnJ0OjE"
)
CONFIG = {
    "user_id": ACCOUNT["id"],
    "username": ACCOUNT["username"],
    "access_token": ACCESS,
    "refresh_token": REFRESH,
}


def x_settings(**overrides: Any) -> XSettings:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "api_url": API,
        "authorize_url": AUTHORIZE,
        **overrides,
    }
    return XSettings(**values)


def problem(status: int, title: str, detail: str) -> httpx.Response:
    """X's error body (RFC 7807 problem JSON)."""
    return httpx.Response(
        status, json={"title": title, "detail": detail, "type": "about:blank", "status": status}
    )


def granted(access: str, refresh: str, expires_in: int = 7200) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "token_type": "bearer",
            "expires_in": expires_in,
            "access_token": access,
            "scope": "tweet.read tweet.write users.read dm.read dm.write offline.access",
            "refresh_token": refresh,
        },
    )


@pytest.fixture
def gateway_settings(database_url: str) -> Settings:
    return make_settings(database_url, auth_redirect_allowlist=DONE, base_url=BASE)


@pytest.fixture
def app_settings() -> XSettings:
    return x_settings()


@pytest.fixture
async def gw(gateway_settings: Settings, app_settings: XSettings) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(XPlugin, source="builtin:x", settings=app_settings)
    registry.add(TwitterPlugin, source="builtin:twitter", settings=app_settings)
    async with open_gateway(gateway_settings, registry) as gateway:
        yield gateway


@pytest.fixture
def events(respx_mock: respx.MockRouter) -> respx.Route:
    return respx_mock.post(EVENTS).respond(204)


@pytest.fixture
async def driver(gw: TestGateway, events: respx.Route) -> DriverCredentials:
    driver = await gw.create_driver("alice", event_url=EVENTS)
    await gw.create_community(driver, "commons")
    return driver


async def enable(
    gw: TestGateway, driver: DriverCredentials, plugin: str = "x", **config: Any
) -> dict[str, Any]:
    response = await gw.client.post(
        f"/api/internal/plugin/{plugin}", json={**CONFIG, **config}, headers=driver.to("commons")
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def act(
    gw: TestGateway, driver: DriverCredentials, name: str, **parameters: Any
) -> httpx.Response:
    return await gw.client.post(
        f"/api/internal/action/{name}",
        json={"parameters": parameters},
        headers=driver.to("commons"),
    )


def delivered(events: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in events.calls]
