"""Call, then commit: while a plugin waits on its platform, the gateway holds no transaction and
no row lock, so other writes go through at once, on SQLite (whose one writer would otherwise wait)
and on PostgreSQL (whose row locks on the community would): creating a community, and changing the
same community's subscriptions. Whichever hook is waiting: ``initialize``, an action, a process's
``start`` and ``close``, a process's ``receive_webhook`` after its plugin recorded an event. A test
plugin calls a platform that answers only when the test lets it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from pydantic import BaseModel

from metagov.config import Settings
from metagov.plugins.sdk import (
    GovernanceProcess,
    Plugin,
    PluginContext,
    ProcessContext,
    WebhookAccepted,
    WebhookRequest,
    WebhookScope,
    action,
)
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry

PLATFORM = "https://slow.test/api"


class Nothing(BaseModel):
    pass


class Done(BaseModel):
    ok: bool


async def ask(ctx: PluginContext[Any], what: str) -> None:
    response = await ctx.http.post(f"{PLATFORM}/{what}")
    response.raise_for_status()
    ctx.state.set(what, True)


class Errand(GovernanceProcess[Nothing, Nothing, Done]):
    slug = "errand"
    params_model = Nothing
    outcome_model = Done

    async def start(self, ctx: ProcessContext[Nothing, Done], params: Nothing) -> None:
        await ask(ctx, "start")

    async def close(self, ctx: ProcessContext[Nothing, Done], params: Nothing) -> None:
        await ask(ctx, "close")
        ctx.complete(Done(ok=True))

    async def receive_webhook(
        self, ctx: ProcessContext[Nothing, Done], params: Nothing, webhook: WebhookRequest
    ) -> None:
        await ask(ctx, "webhook")
        ctx.set_outcome(Done(ok=True))


class SlowPlugin(Plugin[Nothing]):
    """Every hook asks the platform something before it records anything."""

    name = "slow"
    processes = (Errand,)
    webhooks = WebhookScope.INSTANCE

    async def initialize(self, ctx: PluginContext[Nothing]) -> None:
        await ask(ctx, "initialize")

    @action("work")
    async def work(self, ctx: PluginContext[Nothing], params: Nothing) -> Done:
        await ask(ctx, "work")
        return Done(ok=True)

    async def verify_webhook(
        self, request: WebhookRequest, config: Nothing | None
    ) -> WebhookAccepted:
        return WebhookAccepted()

    async def receive_webhook(self, ctx: PluginContext[Nothing], webhook: WebhookRequest) -> None:
        ctx.emit_event("noted", {})  # numbering an event writes to the community's row


class Platform:
    """The slow platform: each request waits until the test releases it."""

    def __init__(self, respx_mock: respx.MockRouter) -> None:
        self.arrived: dict[str, asyncio.Event] = {}
        self.release = asyncio.Event()
        respx_mock.post(url__startswith=PLATFORM).mock(side_effect=self._answer)

    def expect(self, what: str) -> asyncio.Event:
        """An event set when the plugin's request for ``what`` reaches the platform."""
        self.arrived[what] = asyncio.Event()
        return self.arrived[what]

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        self.arrived[request.url.path.rsplit("/", 1)[-1]].set()
        await self.release.wait()
        return httpx.Response(200, json={})


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(SlowPlugin, source="tests")
    async with open_gateway(settings, registry) as gateway:
        yield gateway


async def while_waiting(
    gw: TestGateway,
    driver: DriverCredentials,
    platform: Platform,
    what: str,
    call: Callable[[], Awaitable[Any]],
) -> Any:
    """Start ``call``, wait until its plugin is waiting on the platform for ``what``, write
    meanwhile (the writes must not wait for the plugin), then let the platform answer."""
    platform.release.clear()
    reached = platform.expect(what)
    pending = asyncio.create_task(call())
    await asyncio.wait_for(reached.wait(), timeout=10)
    created = await asyncio.wait_for(
        gw.client.post("/api/internal/community", json={}, headers=driver.headers),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    subscribed = await asyncio.wait_for(
        gw.client.put(
            "/api/internal/subscriptions",
            json={"event_types": [f"{what}.*", "process.*"]},
            headers=driver.to("commons"),
        ),
        timeout=10,
    )
    assert subscribed.status_code == 200, subscribed.text
    assert not pending.done(), "the plugin's call was still waiting on its platform"
    platform.release.set()
    return await pending


async def test_no_hook_holds_the_database_while_it_waits_on_its_platform(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    platform = Platform(respx_mock)
    driver = await gw.create_driver("alice")
    await gw.create_community(driver, "commons")
    headers = driver.to("commons")

    enabled = await while_waiting(
        gw,
        driver,
        platform,
        "initialize",
        lambda: gw.client.post("/api/internal/plugin/slow", json={}, headers=headers),
    )
    assert enabled.status_code == 201, enabled.text

    worked = await while_waiting(
        gw,
        driver,
        platform,
        "work",
        lambda: gw.client.post("/api/internal/action/slow.work", headers=headers),
    )
    assert worked.json() == {"ok": True}

    started = await while_waiting(
        gw,
        driver,
        platform,
        "start",
        lambda: gw.client.post("/api/internal/process/slow.errand", json={}, headers=headers),
    )
    assert started.status_code == 202, started.text
    closed = await while_waiting(
        gw,
        driver,
        platform,
        "close",
        lambda: gw.client.delete(
            f"/api/internal/process/slow.errand/{started.json()['id']}", headers=headers
        ),
    )
    assert closed.json()["status"] == "completed"

    second = await while_waiting(
        gw,
        driver,
        platform,
        "start",
        lambda: gw.client.post("/api/internal/process/slow.errand", json={}, headers=headers),
    )
    hooked = await gw.client.post("/api/hooks/commons/slow", content=b"{}")
    assert hooked.status_code == 200
    await while_waiting(gw, driver, platform, "webhook", gw.drain)

    # What each hook recorded was saved once it returned.
    process = await gw.client.get(
        f"/api/internal/process/slow.errand/{second.json()['id']}", headers=headers
    )
    assert process.json()["outcome"] == {"ok": True}
    events = await gw.client.get("/api/internal/events", headers=driver.headers)
    assert "noted" in [event["event_type"] for event in events.json()]
