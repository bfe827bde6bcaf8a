"""What the SDK lets a platform plugin express, end to end through a running gateway, with the
``ballot`` test plugin and a mocked ballot platform: expiring credentials, URL-token webhooks,
immediate replies, correlation of webhooks to processes, suspension, and state writes that leave
the config alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from sqlalchemy import text

from metagov.config import Settings
from metagov.db.base import utcnow
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.ballot import API, BallotPlugin
from tests.conftest import make_registry

EVENTS = "https://driver.test/events"
BALLOT = {"space_id": "S1", "refresh_token": "refresh-1"}


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(BallotPlugin, source="tests")
    async with open_gateway(settings, registry) as gateway:
        yield gateway


def mint(respx_mock: respx.MockRouter, *tokens: str, expires_in: int = 3600) -> respx.Route:
    return respx_mock.post(f"{API}/token").mock(
        side_effect=[
            httpx.Response(200, json={"access_token": t, "expires_in": expires_in}) for t in tokens
        ]
    )


@pytest.fixture
async def alice(gw: TestGateway, respx_mock: respx.MockRouter) -> DriverCredentials:
    respx_mock.post(EVENTS).respond(204)
    return await gw.create_driver("alice", event_url=EVENTS)


async def enable(gw: TestGateway, alice: DriverCredentials, **config: Any) -> dict[str, Any]:
    await gw.create_community(alice, "commons")
    response = await gw.client.post(
        "/api/internal/plugin/ballot", json={**BALLOT, **config}, headers=alice.to("commons")
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def delivered(respx_mock: respx.MockRouter) -> list[dict[str, Any]]:
    return [
        json.loads(call.request.content)
        for call in respx_mock.calls
        if str(call.request.url) == EVENTS
    ]


async def test_enable_mints_credentials_and_shows_the_hook_url_once(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    minted = mint(respx_mock, "access-1")
    body = await enable(gw, alice, webhook_token="tok-123")

    assert parse_qs(minted.calls.last.request.content.decode()) == {"refresh_token": ["refresh-1"]}
    assert body["secrets_set"] == ["access_token", "refresh_token", "webhook_token"]
    hook = urlsplit(body["notices"]["hook_url"])
    assert hook.path == "/api/hooks/commons/ballot"
    assert parse_qs(hook.query) == {"community_platform_id": ["S1"], "token": ["tok-123"]}
    again = await gw.client.get("/api/internal/community/commons", headers=alice.headers)
    assert again.json()["plugins"][0]["notices"] is None
    async with gw.runtime.db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT config, secrets FROM plugin_instances"))).one()
    assert "access-1" not in str(stored) and "tok-123" not in str(stored)


async def test_credentials_are_refreshed_before_they_expire(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    minted = mint(respx_mock, "short-lived", "access-2", expires_in=60)
    me = respx_mock.get(f"{API}/me").respond(200, json={"name": "bot"})
    await enable(gw, alice)

    answer = await gw.client.post("/api/internal/action/ballot.whoami", headers=alice.to("commons"))

    assert answer.status_code == 200, answer.text
    assert minted.call_count == 2  # the first token expires within the five-minute margin
    assert me.calls.last.request.headers["authorization"] == "Bearer access-2"


async def test_a_rejected_token_is_refreshed_once_and_the_call_retried(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    minted = mint(respx_mock, "access-1", "access-2", "access-3", "access-4")
    me = respx_mock.get(f"{API}/me").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json={"name": "bot"})]
    )
    await enable(gw, alice)

    answer = await gw.client.post("/api/internal/action/ballot.whoami", headers=alice.to("commons"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"name": "bot"}
    assert [c.request.headers["authorization"] for c in me.calls] == [
        "Bearer access-1",
        "Bearer access-2",
    ]

    # The refreshed token was stored: the next call uses it without minting another.
    me.side_effect = [httpx.Response(200, json={"name": "bot"})]
    assert (
        await gw.client.post("/api/internal/action/ballot.whoami", headers=alice.to("commons"))
    ).status_code == 200
    assert me.calls.last.request.headers["authorization"] == "Bearer access-2"
    assert minted.call_count == 2

    # Rejected again after the refresh: the Driver gets a 502 naming it, and no loop.
    me.side_effect = [httpx.Response(401), httpx.Response(401)]
    failed = await gw.client.post("/api/internal/action/ballot.whoami", headers=alice.to("commons"))
    assert failed.status_code == 502
    assert failed.json()["code"] == "credentials_rejected"
    assert minted.call_count == 3


async def hook(gw: TestGateway, payload: dict[str, Any], **query: str) -> httpx.Response:
    return await gw.client.post(
        "/api/hooks/commons/ballot", params=query, content=json.dumps(payload).encode()
    )


async def inbox_rows(gw: TestGateway) -> int:
    async with gw.runtime.db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM inbound_webhooks"))).scalar_one())


async def test_url_token_webhooks_keep_their_query_but_never_the_token(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    mint(respx_mock, "access-1")
    await enable(gw, alice, webhook_token="tok-123")

    assert (await hook(gw, {"id": "1", "type": "note"})).status_code == 401
    assert (await hook(gw, {"id": "1", "type": "note"}, token="nope")).status_code == 401
    assert await inbox_rows(gw) == 0

    accepted = await hook(gw, {"id": "1", "type": "note"}, token="tok-123", channel="general")
    assert accepted.status_code == 200, accepted.text
    await gw.drain()

    [event] = [e for e in delivered(respx_mock) if e["event_type"] == "ballot.note"]
    assert event["data"]["query"] == {"channel": "general"}
    async with gw.runtime.db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT query FROM inbound_webhooks"))).scalar_one()
    assert "tok-123" not in str(stored)


async def test_an_interaction_is_answered_before_its_job_runs(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    mint(respx_mock, "access-1")
    await enable(gw, alice, webhook_token="tok-123")

    answer = await hook(gw, {"id": "9", "type": "interaction"}, token="tok-123")

    assert answer.status_code == 200
    assert answer.json() == {"type": "deferred"}
    assert await inbox_rows(gw) == 1
    assert not delivered(respx_mock)  # handled later, by the job
    await gw.drain()
    assert [e["event_type"] for e in delivered(respx_mock)] == ["ballot.interaction"]


async def start_poll(gw: TestGateway, alice: DriverCredentials, poll_id: str) -> int:
    started = await gw.client.post(
        "/api/internal/process/ballot.poll", json={"poll_id": poll_id}, headers=alice.to("commons")
    )
    assert started.status_code == 202, started.text
    return int(started.json()["id"])


async def read_poll(gw: TestGateway, alice: DriverCredentials, process_id: int) -> dict[str, Any]:
    found = await gw.client.get(
        f"/api/internal/process/ballot.poll/{process_id}", headers=alice.to("commons")
    )
    return dict(found.json())


async def test_a_webhook_reaches_only_the_processes_it_names(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    mint(respx_mock, "access-1")
    await enable(gw, alice, webhook_token="tok")
    first, second = await start_poll(gw, alice, "p1"), await start_poll(gw, alice, "p2")
    untouched = await read_poll(gw, alice, second)

    await hook(gw, {"id": "v1", "type": "vote", "poll_id": "p1"}, token="tok")
    await hook(gw, {"id": "v2", "type": "vote", "poll_id": "p1"}, token="tok")
    await hook(gw, {"id": "n1", "type": "vote"}, token="tok")  # names no poll
    await gw.drain()

    assert (await read_poll(gw, alice, first))["outcome"] == {"votes": 2}
    assert await read_poll(gw, alice, second) == untouched
    updates = [e for e in delivered(respx_mock) if e["event_type"] == "process.updated"]
    assert {e["data"]["id"] for e in updates} == {first}


async def test_a_suspended_instance_refuses_work_until_resumed(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    mint(respx_mock, "access-1")
    respx_mock.get(f"{API}/me").respond(200, json={"name": "bot"})
    await enable(gw, alice, webhook_token="tok")

    await hook(gw, {"id": "s1", "type": "paused"}, token="tok")
    await gw.drain()
    refused = await gw.client.post(
        "/api/internal/action/ballot.whoami", headers=alice.to("commons")
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "plugin_suspended"
    poll = await gw.client.post(
        "/api/internal/process/ballot.poll", json={"poll_id": "p"}, headers=alice.to("commons")
    )
    assert poll.status_code == 409
    community = await gw.client.get("/api/internal/community/commons", headers=alice.headers)
    assert community.json()["plugins"][0]["suspended_at"] is not None

    await hook(gw, {"id": "s2", "type": "resumed"}, token="tok")
    await gw.drain()
    assert (
        await gw.client.post("/api/internal/action/ballot.whoami", headers=alice.to("commons"))
    ).status_code == 200
    changes = [
        (e["event_type"], e["data"].get("suspended"))
        for e in delivered(respx_mock)
        if e["event_type"].startswith("plugin.")
    ]
    assert changes == [("plugin.disabled", True), ("plugin.enabled", None)]


async def test_state_writes_leave_the_config_version_alone(
    gw: TestGateway, alice: DriverCredentials
) -> None:
    await gw.create_community(
        alice, "commons", [{"name": "echo", "config": {"team_id": "T1", "api_token": "t"}}]
    )
    before = (await gw.client.get("/api/internal/community/commons", headers=alice.headers)).json()
    for _ in range(2):
        counted = await gw.client.post(
            "/api/internal/action/echo.count", headers=alice.to("commons")
        )
        assert counted.status_code == 200
    after = (await gw.client.get("/api/internal/community/commons", headers=alice.headers)).json()
    assert after["plugins"][0]["updated_at"] == before["plugins"][0]["updated_at"]
    assert counted.json() == {"count": 2}


async def test_process_hooks_get_their_typed_parameters(
    gw: TestGateway, alice: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    randomness = {"name": "randomness", "config": {"default_low": 1, "default_high": 6}}
    await gw.create_community(alice, "commons", [randomness])
    started = await gw.client.post(
        "/api/internal/process/randomness.delayed-stochastic-vote",
        json={"options": ["x", "y"], "delay_seconds": 60},
        headers=alice.to("commons"),
    )
    assert started.status_code == 202
    await gw.drain(now=utcnow() + timedelta(minutes=2))
    [done] = [e for e in delivered(respx_mock) if e["event_type"] == "process.completed"]
    assert set(done["data"]["outcome"]["votes"]) == {"x", "y"}
