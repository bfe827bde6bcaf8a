"""``metagov.testing``, the harness plugin tests use: a webhook reaches a mocked Driver once the
test drains the jobs, and a process deadline passes when the test moves the clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta

import respx

from metagov.config import Settings
from metagov.db.base import utcnow
from metagov.testing import open_gateway
from tests.conftest import make_registry

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
EVENTS = "https://driver.test/events"


def signed(body: bytes, msg_id: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


async def test_drain_handles_webhooks_and_delivers_their_events(
    settings: Settings, respx_mock: respx.MockRouter
) -> None:
    received = respx_mock.post(EVENTS).respond(204)
    async with open_gateway(settings, make_registry()) as gw:
        driver = await gw.create_driver("alice", event_url=EVENTS)
        await gw.create_community(
            driver, "commons", [{"name": "webhook", "config": {"secret": SECRET}}]
        )
        body = json.dumps({"hello": "world"}).encode()
        answer = await gw.client.post(
            "/api/hooks/commons/webhook", content=body, headers=signed(body, "m1")
        )
        assert answer.status_code == 200, answer.text
        assert not received.called  # nothing runs until the test drains

        assert await gw.drain() >= 1

        [call] = received.calls
        event = json.loads(call.request.content)
        assert (event["event_type"], event["data"]) == ("webhook", {"hello": "world"})
        assert await gw.drain() == 0


async def test_drain_with_a_later_clock_closes_due_processes(
    settings: Settings, respx_mock: respx.MockRouter
) -> None:
    received = respx_mock.post(EVENTS).respond(204)
    async with open_gateway(settings, make_registry()) as gw:
        driver = await gw.create_driver("alice", event_url=EVENTS)
        randomness = {"name": "randomness", "config": {"default_low": 1, "default_high": 6}}
        await gw.create_community(driver, "commons", [randomness])
        started = await gw.client.post(
            "/api/internal/process/randomness.delayed-stochastic-vote",
            json={"options": ["a", "b"], "delay_seconds": 3600},
            headers=driver.to("commons"),
        )
        assert started.status_code == 202, started.text

        await gw.drain()
        assert not received.called

        await gw.drain(now=utcnow() + timedelta(hours=2))
        [call] = received.calls
        event = json.loads(call.request.content)
        assert event["event_type"] == "process.completed"
        assert event["data"]["outcome"]["winner"] in ("a", "b")
