"""A gateway with a Driver and the Open Collective plugin set up for a fake Open Collective:
its GraphQL API v2 at https://api.oc.test/graphql/v2 (answers shaped as Open Collective's:
``{"data": …}``, and ``{"errors": [{"message", "extensions": {"code"}}], "data": …}`` when it
refuses), its token endpoint at https://api.oc.test/oauth/token, its website at
https://oc.test."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from metagov.plugins.opencollective import OpenCollectivePlugin
from metagov.plugins.opencollective.schemas import OpenCollectiveSettings
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings

BASE = "https://metagov.test"
EVENTS = "https://driver.test/events"
DONE = "https://driver.test/opencollective/done"
API = "https://api.oc.test"
GRAPHQL = f"{API}/graphql/v2"
WEBSITE = "https://oc.test"
PERSONAL_TOKEN = "3f1c8e0a9b7d4c2e6f5a1b0c9d8e7f6a5b4c3d2e"
TOKEN = "oc-hook-token-0123456789abcdef"
HOOK_URL = f"{BASE}/api/hooks/commons/opencollective?community_platform_id=metagov&token={TOKEN}"

COLLECTIVE = {
    "id": "rvelja97-pkzqbgq7-mxbm8oy3-dnwe35x0",
    "legacyId": 11004,
    "slug": "metagov",
    "name": "Metagov",
    "type": "COLLECTIVE",
}
PROJECT = {
    "id": "8ka5yd9x-l6qro4w3-yvzrqmj7-bjne3w04",
    "legacyId": 11005,
    "slug": "metagov-research",
    "name": "Metagov Research",
    "type": "PROJECT",
}
OC_CONFIG = {
    "collective_slug": "metagov",
    "access_token": PERSONAL_TOKEN,
    "webhook_token": TOKEN,
}


def oc_settings() -> OpenCollectiveSettings:
    return OpenCollectiveSettings(
        client_id="b9f8a33b1d7e2c5a",
        client_secret="client-secret-value",
        api_url=API,
        oauth_url=WEBSITE,
    )


def expense(
    legacy_id: int = 51344,
    *,
    account: dict[str, Any] | None = None,
    status: str = "APPROVED",
    activities: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An expense as the plugin's GraphQL query asks for it."""
    owner = account or {**COLLECTIVE}
    return {
        "id": "x9ed7w0j-k3oqv4ak-o3e5kbmr-lzyxg8p7",
        "legacyId": legacy_id,
        "description": "Server hosting for March",
        "amount": 12000,
        "currency": "USD",
        "type": "INVOICE",
        "status": status,
        "createdAt": "2021-09-28T18:40:00.000Z",
        "tags": ["hosting"],
        "account": owner,
        "payee": {"id": "p0yee1d", "slug": "ana-lima", "name": "Ana Lima"},
        "createdByAccount": {"id": "p0yee1d", "slug": "ana-lima", "name": "Ana Lima"},
        "activities": activities
        if activities is not None
        else [
            {
                "id": "act-1",
                "type": "COLLECTIVE_EXPENSE_CREATED",
                "createdAt": "2021-09-28T18:40:00.000Z",
                "individual": {"id": "p0yee1d", "slug": "ana-lima"},
            },
            {
                "id": "act-2",
                "type": "COLLECTIVE_EXPENSE_APPROVED",
                "createdAt": "2021-09-28T19:02:11.512Z",
                "individual": {"id": "adm1n", "slug": "bo-admin"},
            },
        ],
    }


def conversation(
    *, title: str = "Should we pay for the server?", reactions: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "id": "d4yx5jen-gl0kzpq9-v7b3z8ma-wr9b6ok8",
        "slug": "should-we-pay-for-the-server",
        "title": title,
        "createdAt": "2021-10-01T09:00:00.000Z",
        "tags": ["metagov-vote"],
        "account": {"id": COLLECTIVE["id"], "slug": "metagov"},
        "body": {"id": "c0mment1", "reactions": reactions or {}},
        "stats": {"commentsCount": 1},
    }


def refused(message: str, code: str, field: str) -> dict[str, Any]:
    """Open Collective's answer when a resolver throws: 200 with ``errors`` and null data."""
    return {
        "errors": [
            {
                "message": message,
                "locations": [{"line": 3, "column": 3}],
                "path": [field],
                "extensions": {"code": code},
            }
        ],
        "data": {field: None},
    }


Handler = Callable[[dict[str, Any], httpx.Request], dict[str, Any] | httpx.Response]


class FakeOpenCollective:
    """Answers each GraphQL operation (by its name) with what a test set; records the
    operations with their variables and the auth header they came with."""

    def __init__(self, respx_mock: respx.MockRouter) -> None:
        self.handlers: dict[str, Handler] = {
            "Account": lambda v, r: {
                "data": {"account": {**COLLECTIVE, "childrenAccounts": {"nodes": [PROJECT]}}}
            },
            "CreateWebhook": lambda v, r: {
                "data": {
                    "createWebhook": {"id": "wh-1", "legacyId": 345, "activityType": "ACTIVITY_ALL"}
                }
            },
            "UpdateWebhook": lambda v, r: {
                "data": {
                    "updateWebhook": {"id": "wh-1", "legacyId": 345, "activityType": "ACTIVITY_ALL"}
                }
            },
        }
        self.calls: list[tuple[str, dict[str, Any], httpx.Headers]] = []
        self.route = respx_mock.post(GRAPHQL).mock(side_effect=self._answer)
        self.token = respx_mock.post(f"{API}/oauth/token")

    def on(self, operation: str, answer: dict[str, Any] | Handler | httpx.Response) -> None:
        if callable(answer):
            self.handlers[operation] = answer
        else:
            self.handlers[operation] = lambda v, r: answer

    def _answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        found = re.search(r"(?:query|mutation)\s+(\w+)", body["query"])
        assert found, body["query"]
        operation = found.group(1)
        self.calls.append((operation, body.get("variables") or {}, request.headers))
        handler = self.handlers.get(operation)
        assert handler is not None, f"no answer set for {operation}"
        answer = handler(body.get("variables") or {}, request)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def operations(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def variables(self, operation: str) -> list[dict[str, Any]]:
        return [v for name, v, _ in self.calls if name == operation]


@pytest.fixture
def respx_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(OpenCollectivePlugin, source="builtin:opencollective", settings=oc_settings())
    settings = make_settings(database_url, base_url=BASE, auth_redirect_allowlist=DONE)
    async with open_gateway(settings, registry) as gw:
        yield gw


@pytest.fixture
def oc(respx_mock: respx.MockRouter) -> FakeOpenCollective:
    return FakeOpenCollective(respx_mock)


@pytest.fixture
def driver_events(respx_mock: respx.MockRouter) -> respx.Route:
    return respx_mock.post(EVENTS).respond(204)


@pytest.fixture
async def driver(gateway: TestGateway) -> DriverCredentials:
    created = await gateway.create_driver("alice", event_url=EVENTS)
    await gateway.create_community(created, "commons")
    return created


async def enable(gateway: TestGateway, driver: DriverCredentials, **config: Any) -> httpx.Response:
    return await gateway.client.post(
        "/api/internal/plugin/opencollective",
        json={**OC_CONFIG, **config},
        headers=driver.to("commons"),
    )


@pytest.fixture
async def enabled(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> dict[str, Any]:
    """Open Collective enabled in ``commons`` by hand, with a personal token."""
    response = await enable(gateway, driver)
    assert response.status_code == 201, response.text
    oc.calls.clear()
    return dict(response.json())


def events(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


async def act(
    gateway: TestGateway, driver: DriverCredentials, slug: str, **parameters: Any
) -> httpx.Response:
    return await gateway.client.post(
        f"/api/internal/action/opencollective.{slug}",
        json={"parameters": parameters},
        headers=driver.to("commons"),
    )
