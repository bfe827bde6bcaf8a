"""Events, subscriptions and deliveries against the real gateway. Deliveries reach a real HTTP
server on loopback, and are checked with the client's own ``verify_event``: if the client and
the gateway disagreed on the signature scheme, these tests would fail."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from client_support import Received, Receiver, eventually, eventually_async
from metagov_client import AsyncMetagovClient, Delivery, sign_headers, verify_event
from metagov_client.models import DeliveryStatus
from metagov_client.testing import Gateway

VOTE = "randomness.delayed-stochastic-vote"


async def test_events_after_a_cursor(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    for number in (1, 2, 3):
        await aclient.perform_action(slug, "randomness.set-lucky-number", {"number": number})

    events = await aclient.list_events(slug)
    assert [e.data["number"] for e in events] == [1, 2, 3]
    assert {e.event_type for e in events} == {"lucky_number_changed"}
    assert [e.seq for e in events] == [1, 2, 3]
    assert all(e.id == f"evt_{e.event_id}" and e.source == "randomness" for e in events)
    assert abs(events[0].time.timestamp() - time.time()) < 60

    after_first = await aclient.list_events(slug, after=events[0].event_id)
    assert [e.event_id for e in after_first] == [e.event_id for e in events[1:]]
    assert await aclient.list_events(slug, after=events[-1].event_id) == []

    paged = [e async for e in aclient.iter_events(slug, page_size=2)]
    assert paged == events
    # Without a community, every community of the Driver: ours are among them.
    everyone = await aclient.list_events(after=events[0].event_id - 1, limit=1000)
    assert [e.event_id for e in everyone if e.community == slug] == [e.event_id for e in events]


async def test_deliveries_verify_with_the_client(
    aclient: AsyncMetagovClient, gateway: Gateway, receiver: Receiver, slug: str
) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    await aclient.perform_action(slug, "randomness.set-lucky-number", {"number": 42})
    [listed] = await aclient.list_events(slug)

    def delivered() -> list[Received]:
        return [r for r in receiver.at("/events") if r.headers["webhook-id"] == listed.id]

    [received] = eventually(delivered)
    event = verify_event(gateway.webhook_secret, received.headers, received.body)
    assert event == listed  # event_id read back from the envelope's `id`
    assert received.headers["content-type"] == "application/json"

    deliveries = await aclient.list_deliveries(status="succeeded", limit=1000)
    [mine] = [d for d in deliveries if d.event_id == listed.event_id]
    assert mine.target == "driver" and mine.url == receiver.url("/events")
    assert mine.attempts == 1 and mine.last_status_code == 200
    assert mine.delivered_at is not None


async def test_a_process_event_carries_the_record(
    aclient: AsyncMetagovClient, gateway: Gateway, receiver: Receiver, slug: str
) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    callback = receiver.url(f"/callback/{slug}")
    started = await aclient.start_process(
        slug, VOTE, {"options": ["a", "b"], "delay_seconds": 0}, callback_url=callback
    )
    [received] = eventually(lambda: receiver.at(f"/callback/{slug}"))
    event = verify_event(gateway.webhook_secret, received.headers, received.body)
    assert event.event_type == "process.completed"
    process = event.process
    assert process is not None
    assert process.id == started.id and process.status == "completed"
    assert process.outcome["winner"] in {"a", "b"}
    assert process == await aclient.get_process(slug, VOTE, started.id)


async def test_dead_deliveries_are_replayed(
    aclient: AsyncMetagovClient, receiver: Receiver, slug: str
) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    path = f"/fail/{slug}"
    url = receiver.url(path)
    await aclient.start_process(
        slug, VOTE, {"options": ["a"], "delay_seconds": 0}, callback_url=url
    )

    async def with_status(status: DeliveryStatus) -> list[Delivery]:
        found = await aclient.list_deliveries(status=status, limit=1000)
        return [d for d in found if d.url == url]

    [dead] = await eventually_async(lambda: with_status("dead"))
    assert dead.target == "callback" and dead.attempts == 2  # the first attempt and one retry
    assert dead.last_status_code == 500
    assert len(receiver.at(path)) == 2

    receiver.healed.add(path)
    replayed = await aclient.replay_delivery(dead.id)
    assert replayed.id == dead.id and replayed.status == "pending"
    [succeeded] = await eventually_async(lambda: with_status("succeeded"))
    assert succeeded.id == dead.id
    first, *_, last = receiver.at(path)
    assert last.headers["webhook-id"] == first.headers["webhook-id"]  # the original id


async def test_replay_every_dead_delivery(
    aclient: AsyncMetagovClient, receiver: Receiver, slug: str
) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    url = receiver.url(f"/fail/{slug}")
    await aclient.start_process(
        slug, VOTE, {"options": ["a"], "delay_seconds": 0}, callback_url=url
    )

    async def dead() -> list[Delivery]:
        return [d for d in await aclient.list_deliveries(status="dead") if d.url == url]

    await eventually_async(dead)
    now = datetime.now(timezone.utc)
    assert await aclient.replay_dead_deliveries(since=now + timedelta(hours=1)) == 0
    # Every dead delivery of the Driver, so those of other tests too: at least ours.
    assert await aclient.replay_dead_deliveries(since=now - timedelta(hours=1)) >= 1
    with pytest.raises(ValueError, match="time zone"):
        await aclient.replay_dead_deliveries(since=datetime.now())


async def test_subscriptions(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug)
    assert await aclient.get_subscriptions(slug) is None
    assert await aclient.set_subscriptions(slug, ["process.*"]) == ["process.*"]
    assert await aclient.get_subscriptions(slug) == ["process.*"]
    assert await aclient.set_subscriptions(slug, None) is None


async def test_a_signed_webhook_becomes_an_event(
    aclient: AsyncMetagovClient, gateway: Gateway, slug: str
) -> None:
    """``sign_headers`` signs as the gateway's ``webhook`` plugin checks: what a platform, or a
    test playing one, sends."""
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    await aclient.create_community(
        slug, plugins={"webhook": {"secret": secret, "event_type_field": "type"}}
    )
    body = json.dumps({"type": "proposal.created", "title": "Adopt a code of conduct"}).encode()
    url = f"{gateway.url}/api/hooks/{slug}/webhook"
    msg_id = f"msg_{uuid.uuid4().hex}"
    async with httpx.AsyncClient() as platform:  # a platform has no Driver key
        accepted = await platform.post(
            url, content=body, headers=sign_headers(secret, msg_id, body)
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"ok": True}
        forged = await platform.post(
            url, content=body, headers=sign_headers("whsec_d3Jvbmctd3Jvbmc=", "m2", body)
        )
        assert forged.status_code == 401
        assert forged.json()["code"] == "webhook_rejected"

    [event] = await eventually_async(lambda: aclient.list_events(slug))
    assert event.source == "webhook"
    assert event.event_type == "proposal.created"
    assert event.data == {"type": "proposal.created", "title": "Adopt a code of conduct"}
