"""Events on their way to Drivers: signed the Standard Webhooks way, retried on the schedule with
the same webhook-id, in order, dead after the last retry and replayable. The Driver's HTTP
endpoint is mocked with respx; jobs run in this process, rung after each commit as in `serve`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select

from metagov.crypto import SecretBox, generate_key
from metagov.db.base import utcnow
from metagov.db.models import Community, Delivery, Driver, Process
from metagov.errors import BadRequest
from metagov.instances.service import rotate_secrets
from metagov.jobs.queue import LocalQueue, take_doorbells
from metagov.jobs.sweeper import sweep
from metagov.outbound import guarded_client, policy_of
from metagov.outbox import handlers as deliveries
from metagov.outbox import repository as outbox_repository
from metagov.outbox import service as events
from metagov.runtime import Caches, Runtime
from metagov.tenancy import service as drivers
from tests.conftest import TEST_SECRET_KEY, DriverKey, plug_queue, running_queue
from tests.receiver import DriverReceiver

EVENTS_URL = "https://driver.example/metagov/events"
CALLBACK_URL = "https://driver.example/callbacks/1"


def verify(secret: str, request: httpx.Request) -> list[bool]:
    """Check each signature in the header independently of the app's own signing code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
    expected = base64.b64encode(hmac.new(key, msg + request.content, hashlib.sha256).digest())
    return [
        hmac.compare_digest(sig.removeprefix("v1,").encode(), expected)
        for sig in request.headers["webhook-signature"].split()
    ]


@pytest.fixture
async def jobs(runtime: Runtime) -> AsyncIterator[LocalQueue]:
    queue = running_queue(runtime)
    plug_queue(runtime, queue)
    yield queue
    await queue.close()


@pytest.fixture
async def driver_url(runtime: Runtime, alice: DriverKey, community: dict[str, Any]) -> str:
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), EVENTS_URL)
    return EVENTS_URL


@pytest.fixture
def fast_retries(runtime: Runtime) -> None:
    runtime.settings.delivery_retry_schedule = [0.0, 0.0, 0.0]


async def lucky(client: httpx.AsyncClient, driver: DriverKey, number: int) -> None:
    response = await client.post(
        "/api/internal/action/randomness.set-lucky-number",
        json={"parameters": {"number": number}},
        headers=driver.to("commons"),
    )
    assert response.status_code == 200


async def drain(runtime: Runtime, jobs: LocalQueue, rounds: int = 10) -> None:
    """Sweep and run jobs until nothing due is left (what the sweeper does over time)."""
    for _ in range(rounds):
        await jobs.join()
        if (await sweep(runtime)).deliveries == 0:
            return
    await jobs.join()


async def test_event_is_delivered_signed(
    client: httpx.AsyncClient,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).respond(204)
    await lucky(client, alice, 7)
    await jobs.join()

    [call] = route.calls
    request = call.request
    assert request.headers["content-type"] == "application/json"
    assert verify(alice.webhook_secret, request) == [True]
    body = json.loads(request.content)
    assert request.headers["webhook-id"] == body["id"]
    assert body["community"] == "commons"
    assert body["source"] == "randomness"
    assert body["event_type"] == "lucky_number_changed"
    assert body["data"] == {"number": 7}
    assert body["initiator"] is None
    assert body["seq"] == 1
    assert float(body["timestamp"]) > 0


async def test_failures_retry_with_the_same_id_and_keep_order(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    fast_retries: None,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).mock(
        side_effect=[httpx.Response(503), httpx.ConnectError("down"), *[httpx.Response(200)] * 3]
    )
    for number in (1, 2, 3):
        await lucky(client, alice, number)
    await drain(runtime, jobs)

    bodies = [json.loads(c.request.content) for c in route.calls]
    assert [b["data"]["number"] for b in bodies] == [1, 1, 1, 2, 3]
    ids = [c.request.headers["webhook-id"] for c in route.calls]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert all(verify(alice.webhook_secret, c.request) == [True] for c in route.calls)


async def test_retry_after_is_honoured(
    client: httpx.AsyncClient,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(EVENTS_URL).respond(429, headers={"Retry-After": "120"})
    await lucky(client, alice, 1)
    await jobs.join()
    async with runtime.db.snapshot() as session:
        delivery = await session.scalar(select(Delivery))
    assert delivery is not None
    assert delivery.status == "pending"
    assert delivery.last_status_code == 429
    wait = (delivery.next_attempt_at - utcnow()).total_seconds()
    assert 110 < wait <= 120


async def test_dead_after_the_last_retry_then_replayed(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    fast_retries: None,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).mock(
        side_effect=[*[httpx.Response(500)] * 4, httpx.Response(200), httpx.Response(200)]
    )
    await lucky(client, alice, 1)
    await drain(runtime, jobs)
    await lucky(client, alice, 2)  # the partition moves on past the dead delivery
    await drain(runtime, jobs)
    assert [json.loads(c.request.content)["data"]["number"] for c in route.calls] == [1] * 4 + [2]

    dead = await client.get("/api/internal/deliveries?status=dead", headers=alice.headers)
    [entry] = dead.json()
    assert entry["attempts"] == 4
    assert entry["last_status_code"] == 500
    first_id = route.calls[0].request.headers["webhook-id"]

    replayed = await client.post(
        f"/api/internal/deliveries/{entry['id']}/replay", headers=alice.headers
    )
    assert replayed.status_code == 200
    assert replayed.json()["status"] == "pending"
    await jobs.join()
    assert route.calls[-1].request.headers["webhook-id"] == first_id
    after = await client.get("/api/internal/deliveries?status=dead", headers=alice.headers)
    assert after.json() == []


async def test_gone_disables_the_endpoint_until_re_enabled(
    client: httpx.AsyncClient,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).mock(
        side_effect=[httpx.Response(410), httpx.Response(200), httpx.Response(200)]
    )
    await lucky(client, alice, 1)
    await lucky(client, alice, 2)
    await drain(runtime, jobs)
    assert len(route.calls) == 1  # nothing more is sent to a Gone endpoint

    async with runtime.unit_of_work() as session:
        driver = await session.scalar(select(Driver).where(Driver.name == "alice"))
        assert driver is not None and driver.endpoint_disabled_at is not None
        await events.enable_endpoint(session, driver)
    await drain(runtime, jobs)
    numbers = [json.loads(c.request.content)["data"]["number"] for c in route.calls]
    assert numbers == [1, 1, 2]


async def test_subscriptions_filter_what_is_sent(
    client: httpx.AsyncClient,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).respond(200)
    chosen = await client.put(
        "/api/internal/subscriptions",
        json={"event_types": ["process.*"]},
        headers=alice.to("commons"),
    )
    assert chosen.status_code == 200
    read = await client.get("/api/internal/subscriptions", headers=alice.to("commons"))
    assert read.json() == {"event_types": ["process.*"]}

    await lucky(client, alice, 1)
    vote = await client.post(
        "/api/internal/process/randomness.delayed-stochastic-vote",
        json={"options": ["a", "b"]},
        headers=alice.to("commons"),
    )
    await client.delete(vote.headers["Location"], headers=alice.to("commons"))
    await jobs.join()
    assert [json.loads(c.request.content)["event_type"] for c in route.calls] == [
        "process.completed"
    ]
    logged = await client.get("/api/internal/events", headers=alice.headers)
    assert [e["event_type"] for e in logged.json()] == [
        "lucky_number_changed",
        "process.completed",
    ]


async def test_process_updates_reach_the_callback_url(
    client: httpx.AsyncClient,
    alice: DriverKey,
    community: dict[str, Any],
    jobs: LocalQueue,
    respx_mock: respx.MockRouter,
) -> None:
    callback = respx_mock.post(CALLBACK_URL).respond(200)
    vote = await client.post(
        "/api/internal/process/randomness.delayed-stochastic-vote",
        json={"options": ["a", "b"], "callback_url": CALLBACK_URL},
        headers=alice.to("commons"),
    )
    closed = await client.delete(vote.headers["Location"], headers=alice.to("commons"))
    await jobs.join()
    [call] = callback.calls
    body = json.loads(call.request.content)
    assert body["event_type"] == "process.completed"
    assert body["source"] == "randomness"
    assert body["data"]["outcome"] == closed.json()["outcome"]
    assert body["data"]["status"] == "completed"
    assert verify(alice.webhook_secret, call.request) == [True]


async def test_secret_rotation_signs_with_both_during_the_overlap(
    client: httpx.AsyncClient,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).respond(200)
    async with runtime.unit_of_work() as session:
        driver = await drivers.get_driver(session, "alice")
        new_secret = await drivers.rotate_webhook_secret(
            session, runtime.secrets, driver, overlap=timedelta(hours=1)
        )
    await lucky(client, alice, 1)
    await jobs.join()
    request = route.calls[0].request
    assert verify(new_secret, request) == [True, False]
    assert verify(alice.webhook_secret, request) == [False, True]


async def test_events_can_be_read_back_by_their_driver_only(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey, community: dict[str, Any]
) -> None:
    for number in (1, 2, 3):
        await lucky(client, alice, number)
    everything = (await client.get("/api/internal/events", headers=alice.headers)).json()
    assert [e["data"]["number"] for e in everything] == [1, 2, 3]
    after = everything[0]["event_id"]
    rest = await client.get(f"/api/internal/events?after={after}&limit=1", headers=alice.headers)
    assert [e["data"]["number"] for e in rest.json()] == [2]
    assert (await client.get("/api/internal/events", headers=bob.headers)).json() == []
    other = await client.get("/api/internal/events", headers=bob.to("commons"))
    assert other.status_code == 404


async def test_timeouts_count_as_failures(
    client: httpx.AsyncClient,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(EVENTS_URL).mock(side_effect=httpx.ReadTimeout("slow driver"))
    await lucky(client, alice, 1)
    await jobs.join()
    async with runtime.db.snapshot() as session:
        delivery = await session.scalar(select(Delivery))
    assert delivery is not None
    assert delivery.status == "pending"
    assert delivery.attempts == 1
    assert delivery.last_error == "timeout"  # a code: not the socket's words
    assert delivery.lease_until is None


async def test_replay_since_needs_a_time_zone(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    naive = await client.post(
        "/api/internal/deliveries/replay",
        json={"since": "2026-01-01T00:00:00"},
        headers=alice.headers,
    )
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["loc"] == ["body", "since"]
    aware = await client.post(
        "/api/internal/deliveries/replay",
        json={"since": "2026-01-01T00:00:00Z"},
        headers=alice.headers,
    )
    assert aware.json() == {"replayed": 0}


async def backlog(client: httpx.AsyncClient, runtime: Runtime, driver: DriverKey, n: int) -> str:
    """``n`` events waiting in one partition (no job runs to deliver them); returns it."""
    for number in range(1, n + 1):
        await lucky(client, driver, number)
    async with runtime.db.snapshot() as session:
        partitions = (await session.scalars(select(Delivery.partition).distinct())).all()
    [partition] = partitions
    return partition


async def test_a_backlog_goes_out_in_order_each_success_claiming_the_next_head(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    driver_url: str,
    backend: str,
    respx_mock: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route = respx_mock.post(EVENTS_URL).respond(200)
    partition = await backlog(client, runtime, alice, 3)
    claims = []
    claim_head = deliveries.claim_head

    async def counted(runtime: Runtime, partition: str) -> deliveries.Claim | None:
        claims.append(partition)
        return await claim_head(runtime, partition)

    monkeypatch.setattr(deliveries, "claim_head", counted)
    assert await deliveries.deliver_partition(runtime, partition) == 3

    assert [json.loads(c.request.content)["data"]["number"] for c in route.calls] == [1, 2, 3]
    # PostgreSQL claims the 2nd and 3rd with the successes before them, then looks once more.
    assert len(claims) == (2 if backend == "postgresql" else 4)
    async with runtime.db.snapshot() as session:
        rows = (await session.scalars(select(Delivery).order_by(Delivery.seq))).all()
    assert [(d.status, d.attempts, d.lease_until) for d in rows] == [("succeeded", 1, None)] * 3


async def test_a_success_after_the_lease_was_lost_claims_nothing_more(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    driver_url: str,
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(EVENTS_URL).respond(200)
    partition = await backlog(client, runtime, alice, 2)
    claim = await deliveries.claim_head(runtime, partition)
    assert claim is not None
    # The lease ran out and another worker claimed the delivery again.
    async with runtime.unit_of_work() as session:
        taken = await session.get_one(Delivery, claim.delivery_id)
        taken.lease_until = claim.lease + timedelta(seconds=1)
    result = await deliveries.attempt(runtime, claim, claim_next=True)

    assert result == deliveries.Result(delivered=False)
    async with runtime.db.snapshot() as session:
        rows = (await session.scalars(select(Delivery).order_by(Delivery.seq))).all()
    assert [(d.status, d.attempts) for d in rows] == [("pending", 1), ("pending", 0)]
    assert rows[1].lease_until is None


async def test_the_last_success_a_job_may_make_claims_nothing_more(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    driver_url: str,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).respond(200)
    partition = await backlog(client, runtime, alice, 3)
    assert await deliveries.deliver_partition(runtime, partition, limit=2) == 2

    assert [json.loads(c.request.content)["data"]["number"] for c in route.calls] == [1, 2]
    async with runtime.db.snapshot() as session:
        last = await session.scalar(select(Delivery).where(Delivery.seq == 3))
    assert last is not None
    assert (last.status, last.attempts, last.lease_until) == ("pending", 0, None)


async def test_an_event_gets_a_delivery_and_a_doorbell_per_endpoint(
    runtime: Runtime, alice: DriverKey, community: dict[str, Any]
) -> None:
    # Not ASCII: PostgreSQL names the Driver's partition itself, from the same UTF-8 bytes.
    driver_url = "https://driver.example/événements"
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), driver_url)
    async with runtime.unit_of_work() as session:
        cid = await session.scalar(select(Community.id).where(Community.slug == "commons"))
        assert cid is not None
        process = Process(
            community_id=cid,
            plugin_name="randomness",
            name="vote",
            status="pending",
            callback_url=CALLBACK_URL,
        )
        session.add(process)
        await session.flush()
        first = await events.record_event(session, cid, source="test", event_type="a", data={})
        second = await events.record_event(
            session,
            cid,
            source="test",
            event_type="b",
            data={"x": 1},
            process_id=process.id,
            callback_url=process.callback_url,
        )
        rung = take_doorbells(session, "deliver")
    to_driver = outbox_repository.partition_of(cid, outbox_repository.DRIVER_ENDPOINT)
    to_callback = outbox_repository.partition_of(cid, CALLBACK_URL)
    assert {job.key for job in rung} == {
        f"deliver:{to_driver}:1",
        f"deliver:{to_driver}:2",
        f"deliver:{to_callback}:2",
    }
    async with runtime.db.snapshot() as session:
        made = (await session.scalars(select(Delivery).order_by(Delivery.seq, Delivery.id))).all()
    assert [(d.event_id, d.seq, d.target, d.url, d.partition) for d in made] == [
        (first, 1, "driver", driver_url, to_driver),
        (second, 2, "driver", driver_url, to_driver),
        (second, 2, "callback", CALLBACK_URL, to_callback),
    ]
    assert all((d.status, d.attempts, d.lease_until) == ("pending", 0, None) for d in made)


async def test_key_rotation_keeps_deliveries_going_with_the_same_secret(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    driver_url: str,
    respx_mock: respx.MockRouter,
) -> None:
    """`metagov keys rotate` re-encrypts the Drivers' signing secrets too: once it has run, a
    gateway holding only the new key signs deliveries with the secret the Driver already has."""
    route = respx_mock.post(EVENTS_URL).respond(200)
    await lucky(client, alice, 7)  # no job runs: the delivery waits
    new_key = generate_key()
    async with runtime.unit_of_work() as session:
        await rotate_secrets(session, SecretBox([new_key, TEST_SECRET_KEY]))
    only_new = replace(runtime, secrets=SecretBox([new_key]), caches=Caches())
    async with runtime.db.snapshot() as session:
        partition = (await session.scalars(select(Delivery.partition))).one()
    assert await deliveries.deliver_partition(only_new, partition) == 1
    [call] = route.calls
    assert verify(alice.webhook_secret, call.request) == [True]


async def test_pending_deliveries_follow_the_drivers_new_url(
    client: httpx.AsyncClient,
    alice: DriverKey,
    driver_url: str,
    jobs: LocalQueue,
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    """A Driver whose old URL is dead moves to a new one: what waited for the old URL goes to
    the new one at once, in order, with the same webhook-ids, followed by what came after."""
    moved = "https://new.driver.example/metagov/events"
    old = respx_mock.post(EVENTS_URL).respond(503)
    new = respx_mock.post(moved).respond(200)
    await lucky(client, alice, 1)
    await lucky(client, alice, 2)
    await jobs.join()
    assert len(old.calls) == 1  # the first waits for its retry; the second waits behind it
    async with runtime.db.snapshot() as session:
        waiting = (await session.scalars(select(Delivery).order_by(Delivery.seq))).all()
    assert waiting[0].next_attempt_at > utcnow()  # hours away on the real schedule

    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), moved)
    await lucky(client, alice, 3)
    await jobs.join()

    assert len(old.calls) == 1
    sent = [json.loads(call.request.content) for call in new.calls]
    assert [body["data"]["number"] for body in sent] == [1, 2, 3]
    assert [call.request.headers["webhook-id"] for call in new.calls] == [
        f"evt_{d.event_id}" for d in waiting
    ] + [sent[2]["id"]]
    async with runtime.db.snapshot() as session:
        made = (await session.scalars(select(Delivery).order_by(Delivery.seq))).all()
    assert [(d.status, d.url) for d in made] == [("succeeded", moved)] * 3
    assert len({d.partition for d in made}) == 1


async def test_a_delivery_the_guard_refuses_fails_with_url_not_allowed(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    """In production, a Driver URL on loopback is refused at connect time: nothing is sent,
    and the Driver reads a short code, not socket text. Listed in the allowlist, it is sent."""
    async with DriverReceiver().running() as receiver:
        async with runtime.unit_of_work() as session:
            driver = await drivers.get_driver(session, "alice")
            await drivers.set_event_url(session, driver, receiver.url)
        await lucky(client, alice, 7)
        production = replace(
            runtime, outbound=guarded_client(policy_of("production", []), timeout=5)
        )
        async with runtime.db.snapshot() as session:
            partition = (await session.scalars(select(Delivery.partition))).one()
        try:
            assert await deliveries.deliver_partition(production, partition) == 0
        finally:
            await production.outbound.aclose()
        assert receiver.attempts == 0
        [failed] = (await client.get("/api/internal/deliveries", headers=alice.headers)).json()
        assert (failed["status"], failed["last_error"]) == ("pending", "url_not_allowed")

        allowed = replace(
            runtime,
            outbound=guarded_client(
                policy_of("production", [f"127.0.0.1:{receiver.port}"]), timeout=5
            ),
        )
        async with runtime.unit_of_work() as session:
            await drivers.set_event_url(session, driver, receiver.url)  # due again, at once
        try:
            assert await deliveries.deliver_partition(allowed, partition) == 1
        finally:
            await allowed.outbound.aclose()
        assert len(receiver.delivered) == 1


async def test_what_a_driver_reads_of_a_failed_attempt_is_a_short_code(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    async with DriverReceiver().running() as receiver:
        closed = receiver.url  # once the server is gone, the port refuses connections
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), closed)
    await lucky(client, alice, 7)
    async with runtime.db.snapshot() as session:
        partition = (await session.scalars(select(Delivery.partition))).one()
    assert await deliveries.deliver_partition(runtime, partition) == 0
    [failed] = (await client.get("/api/internal/deliveries", headers=alice.headers)).json()
    assert failed["last_error"] == "connect_error"


async def test_an_event_url_must_be_an_http_url(runtime: Runtime, alice: DriverKey) -> None:
    async with runtime.unit_of_work() as session:
        with pytest.raises(BadRequest, match="http:// or https:// URL with a host"):
            await drivers.create_driver(session, runtime.secrets, "x", event_url="not a url")
        driver = await drivers.get_driver(session, "alice")
        with pytest.raises(BadRequest, match="http:// or https:// URL with a host"):
            await drivers.set_event_url(session, driver, "file:///etc/passwd")
