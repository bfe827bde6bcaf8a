"""Identity changes reach the Driver as signed events, in order, only when they happened."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import respx

from metagov.signing import verify_standard
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings

EVENTS = "https://driver.test/events"
BASE = "/api/internal/identity"
ECHO = {"name": "echo", "config": {"team_id": "T1", "api_token": "tok-1"}}


@pytest.fixture
async def gw(database_url: str) -> AsyncIterator[TestGateway]:
    async with open_gateway(make_settings(database_url), make_registry()) as gateway:
        yield gateway


@pytest.fixture
async def driver(gw: TestGateway) -> DriverCredentials:
    credentials = await gw.create_driver("alice", event_url=EVENTS)
    await gw.create_community(credentials, "commons", [ECHO])
    return credentials


async def post(gw: TestGateway, driver: DriverCredentials, path: str, body: dict[str, Any]) -> Any:
    response = await gw.client.post(f"{BASE}/{path}", json=body, headers=driver.headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def account(metagov_id: str, identifier: str) -> dict[str, Any]:
    return {
        "id": metagov_id,
        "community": "commons",
        "platform_type": "echo",
        "platform_identifier": identifier,
        "community_platform_id": "T1",
    }


async def test_link_merge_and_unlink_are_delivered_signed_and_in_order(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    received = respx_mock.post(EVENTS).respond(200)
    a, b = await post(gw, driver, "create_id", {"community": "commons", "count": 2})
    linked = await post(gw, driver, "link_account", account(a, "UA"))
    await post(gw, driver, "link_account", account(b, "UB"))
    # Refused changes record nothing.
    taken = await gw.client.post(
        f"{BASE}/link_account", json=account(b, "UA"), headers=driver.headers
    )
    assert taken.status_code == 409
    merged = await post(gw, driver, "merge_ids", {"primary_id": a, "secondary_id": b})
    await post(gw, driver, "merge_ids", {"primary_id": a, "secondary_id": b})  # nothing to do
    unlinked = await post(
        gw,
        driver,
        "unlink_account",
        {k: v for k, v in account(a, "UB").items() if k != "id"},
    )

    await gw.drain()

    events = []
    for call in received.calls:
        request = call.request
        verify_standard(driver.webhook_secret, request.headers, request.content)
        events.append(json.loads(request.content))
    assert [(e["source"], e["event_type"]) for e in events] == [
        ("identity", "identity.linked"),
        ("identity", "identity.linked"),
        ("identity", "identity.merged"),
        ("identity", "identity.unlinked"),
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert {e["community"] for e in events} == {"commons"}
    assert events[0]["data"] == linked
    assert events[0]["initiator"] is None
    assert events[1]["data"]["metagov_id"] == b
    assert events[2]["data"] == {
        "primary_id": a,
        "secondary_id": b,
        "merged_ids": [b],
        "linked_accounts": merged["linked_accounts"],
    }
    assert [acc["metagov_id"] for acc in events[2]["data"]["linked_accounts"]] == [a, a]
    assert events[3]["data"] == unlinked
    assert unlinked["metagov_id"] == a


async def test_relinking_unchanged_records_nothing(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    received = respx_mock.post(EVENTS).respond(200)
    [a] = await post(gw, driver, "create_id", {"community": "commons"})
    await post(gw, driver, "link_account", account(a, "UA"))
    await post(gw, driver, "link_account", account(a, "UA"))
    changed = await post(gw, driver, "link_account", {**account(a, "UA"), "link_type": "email"})

    await gw.drain()

    events = [json.loads(call.request.content) for call in received.calls]
    assert [e["event_type"] for e in events] == ["identity.linked", "identity.linked"]
    assert events[1]["data"] == changed
