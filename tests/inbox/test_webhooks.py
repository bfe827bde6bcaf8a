"""Inbound webhooks through the generic ``webhook`` plugin: verified before anything is stored,
stored once, handled in a job that turns them into Driver events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select, text

from metagov import metrics
from metagov.db.models import Delivery, InboundWebhook
from metagov.inbox import handlers as webhooks
from metagov.inbox import service as inbox
from metagov.inbox.repository import Target
from metagov.jobs.sweeper import sweep
from metagov.runtime import Runtime
from metagov.tenancy import service as drivers
from tests.conftest import DriverKey, count_rows, plug_queue
from tests.fakes import RecordingQueue

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
HOOK = "/api/hooks/commons/webhook"


def standard_signed(
    body: bytes, msg_id: str = "msg_1", ts: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    """Headers a Standard Webhooks sender computes (written out here, not taken from the app)."""
    stamp = str(int(time.time()) if ts is None else ts)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


@pytest.fixture
async def hooked(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        "/api/internal/plugin/webhook",
        json={"secret": SECRET, "event_type_field": "action"},
        headers=alice.to("commons"),
    )
    assert response.status_code == 201, response.text
    assert response.json()["secrets_set"] == ["secret"]
    return dict(response.json())


async def handle_all(runtime: Runtime) -> None:
    """Run the webhook jobs the way a worker would (the test app runs no jobs by itself)."""
    async with runtime.db.snapshot() as session:
        ids = (await session.scalars(select(InboundWebhook.id))).all()
    for inbox_id in ids:
        await webhooks.handle(runtime, inbox_id)


async def events(client: httpx.AsyncClient, driver: DriverKey) -> list[dict[str, Any]]:
    response = await client.get("/api/internal/events", headers=driver.headers)
    assert response.status_code == 200
    return list(response.json())


async def test_verified_webhook_becomes_an_event(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    body = json.dumps({"action": "opened", "number": 7}).encode()
    response = await client.post(HOOK, content=body, headers=standard_signed(body))
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert await count_rows(runtime, "inbound_webhooks") == 1
    assert await count_rows(runtime, "events") == 0  # handled later, not on the request path

    await handle_all(runtime)
    [event] = await events(client, alice)
    assert event["community"] == "commons"
    assert event["source"] == "webhook"
    assert event["event_type"] == "opened"
    assert event["data"] == {"action": "opened", "number": 7}


async def test_github_style_signature(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }
    assert (await client.post(HOOK, content=body, headers=headers)).status_code == 200
    again = await client.post(HOOK, content=body, headers=headers)
    assert again.status_code == 200
    await handle_all(runtime)
    [event] = await events(client, alice)
    assert event["event_type"] == "ping"


@pytest.mark.parametrize(
    "tamper",
    ["body", "secret", "stale", "missing", "future"],
)
async def test_forged_webhooks_get_401_and_store_nothing(
    client: httpx.AsyncClient, hooked: dict[str, Any], runtime: Runtime, tamper: str
) -> None:
    body = json.dumps({"action": "opened"}).encode()
    headers = standard_signed(body)
    if tamper == "body":
        body = body.replace(b"opened", b"openeD")
    elif tamper == "secret":
        wrong = hmac.new(b"not the secret", b"x", hashlib.sha256).digest()
        headers["webhook-signature"] = "v1," + base64.b64encode(wrong).decode()
    elif tamper == "stale":
        headers = standard_signed(body, ts=int(time.time()) - 301)
    elif tamper == "future":
        headers = standard_signed(body, ts=int(time.time()) + 600)
    else:
        del headers["webhook-signature"]
    response = await client.post(HOOK, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "webhook_rejected"
    assert await count_rows(runtime, "inbound_webhooks") == 0


async def test_duplicates_sequential_and_concurrent_make_one_event(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    body = json.dumps({"action": "merged"}).encode()
    headers = standard_signed(body, msg_id="msg_dup")
    first = await client.post(HOOK, content=body, headers=headers)
    burst = await asyncio.gather(
        *(client.post(HOOK, content=body, headers=headers) for _ in range(5))
    )
    assert [r.status_code for r in [first, *burst]] == [200] * 6
    assert await count_rows(runtime, "inbound_webhooks") == 1
    await handle_all(runtime)
    await handle_all(runtime)  # a job that runs twice changes nothing
    assert [e["event_type"] for e in await events(client, alice)] == ["merged"]


async def test_handler_failures_are_recorded_and_retried(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    body = b"not json at all"
    assert (await client.post(HOOK, content=body, headers=standard_signed(body))).status_code == 200
    await handle_all(runtime)
    async with runtime.db.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT status, attempts, last_error FROM inbound_webhooks"))
        ).one()
    assert row.status == "pending"
    assert row.attempts == 1
    assert "not JSON" in row.last_error
    report = await sweep(runtime)
    assert report.webhooks == 0  # backing off, not hammering


async def test_unknown_targets_are_404(client: httpx.AsyncClient, hooked: dict[str, Any]) -> None:
    body = b"{}"
    assert (await client.post("/api/hooks/nowhere/webhook", content=body)).status_code == 404
    assert (await client.post("/api/hooks/commons/nope", content=body)).status_code == 404
    # randomness takes no webhooks; and the generic plugin is per community, not platform-wide
    assert (await client.post("/api/hooks/commons/randomness", content=body)).status_code == 404
    assert (await client.post("/api/hooks/webhook", content=body)).status_code == 404


async def test_plugin_not_enabled_is_404(
    client: httpx.AsyncClient, community: dict[str, Any]
) -> None:
    body = b"{}"
    response = await client.post(HOOK, content=body, headers=standard_signed(body))
    assert response.status_code == 404
    assert response.json()["code"] == "plugin_not_enabled"


async def test_events_keep_the_order_webhooks_arrived_in(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    for n in range(3):
        body = json.dumps({"action": f"step-{n}"}).encode()
        await client.post(HOOK, content=body, headers=standard_signed(body, msg_id=f"msg_{n}"))
    async with runtime.db.snapshot() as session:
        ids = sorted((await session.scalars(select(InboundWebhook.id))).all())
    # The jobs run newest first: the older webhooks are still handled before it.
    assert await webhooks.handle(runtime, ids[2])
    assert not await webhooks.handle(runtime, ids[0])  # already handled, nothing to do
    assert [e["event_type"] for e in await events(client, alice)] == ["step-0", "step-1", "step-2"]


async def test_sweep_rings_one_job_per_sender_for_a_backlog(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    """Doorbells lost for a backlog of webhooks: the sweep's work follows the senders, not the
    size of the backlog, and the one job it rings handles them all in arrival order."""
    for n in range(12):
        body = json.dumps({"action": f"step-{n}"}).encode()
        headers = standard_signed(body, msg_id=f"msg_backlog_{n}")
        assert (await client.post(HOOK, content=body, headers=headers)).status_code == 200
    queue = RecordingQueue()
    plug_queue(runtime, queue)
    report = await sweep(runtime)
    assert report.webhooks == 1
    [job] = [j for j in queue.jobs if j.name == "handle_webhook"]
    await webhooks.handle_sender(runtime, *job.args)
    assert [e["event_type"] for e in await events(client, alice)] == [
        f"step-{n}" for n in range(12)
    ]
    assert (await sweep(runtime)).webhooks == 0


EVENTS_URL = "https://driver.example/metagov/events"


async def post_and_point_driver(
    client: httpx.AsyncClient, runtime: Runtime, action: str
) -> RecordingQueue:
    """A stored webhook and a Driver with an event URL; returns the queue jobs ring from now on."""
    body = json.dumps({"action": action}).encode()
    assert (await client.post(HOOK, content=body, headers=standard_signed(body))).status_code == 200
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), EVENTS_URL)
    queue = RecordingQueue()
    plug_queue(runtime, queue)
    return queue


async def delivery_statuses(runtime: Runtime) -> list[str]:
    async with runtime.db.snapshot() as session:
        return list((await session.scalars(select(Delivery.status))).all())


async def test_the_job_that_handles_a_webhook_delivers_its_event(
    client: httpx.AsyncClient,
    hooked: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(EVENTS_URL).respond(204)
    queue = await post_and_point_driver(client, runtime, "opened")

    await handle_all(runtime)

    [call] = route.calls
    assert json.loads(call.request.content)["event_type"] == "opened"
    assert await delivery_statuses(runtime) == ["succeeded"]
    assert queue.jobs == [], "no second job is needed to deliver the event"


async def test_a_delivery_that_breaks_is_left_to_a_deliver_job(
    client: httpx.AsyncClient,
    hooked: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(EVENTS_URL).mock(side_effect=RuntimeError("client bug"))
    queue = await post_and_point_driver(client, runtime, "opened")

    await handle_all(runtime)

    async with runtime.db.snapshot() as session:
        row = await session.scalar(select(InboundWebhook))
    assert row is not None and row.status == "handled"
    assert [job.name for job in queue.jobs] == ["deliver"]
    assert await delivery_statuses(runtime) == ["pending"]


async def test_an_instance_disabled_while_its_webhook_arrives_is_a_404_not_a_500(
    client: httpx.AsyncClient,
    hooked: dict[str, Any],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The instance is looked up, then disabled before the webhook is stored: the platform is
    told the plugin is gone, and nothing is stored."""
    look_up = inbox._load_targets

    async def then_disabled(*args: Any) -> tuple[Target, ...]:
        found = await look_up(*args)
        async with runtime.db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM plugin_instances"))
        return found

    monkeypatch.setattr(inbox, "_load_targets", then_disabled)
    body = b'{"action": "opened"}'
    response = await client.post(HOOK, content=body, headers=standard_signed(body))
    assert response.status_code == 404
    assert response.json()["code"] == "plugin_not_enabled"
    assert await count_rows(runtime, "inbound_webhooks") == 0


async def test_a_new_secret_applies_to_the_next_webhook(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    """The route keeps what it knows of the instance between webhooks; a config change is still
    seen at once: the old secret stops working, the new one works, on the next request."""
    body = b'{"action": "before"}'
    assert (await client.post(HOOK, content=body, headers=standard_signed(body))).status_code == 200
    new_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    response = await client.post(
        "/api/internal/plugin/webhook",
        json={"secret": new_secret, "event_type_field": "action"},
        headers=alice.to("commons"),
    )
    assert response.status_code in (200, 201), response.text
    body = b'{"action": "after"}'
    rejected = await client.post(HOOK, content=body, headers=standard_signed(body, "msg_old"))
    assert rejected.status_code == 401
    signed_new = standard_signed(body, "msg_new", secret=new_secret)
    assert (await client.post(HOOK, content=body, headers=signed_new)).status_code == 200
    assert await count_rows(runtime, "inbound_webhooks") == 2


async def test_a_second_instance_makes_the_url_ambiguous_at_once(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    """Once a community has two instances of the plugin, a webhook must say which one it is
    for, even right after webhooks were taken for the single one."""
    body = b'{"action": "one"}'
    assert (await client.post(HOOK, content=body, headers=standard_signed(body))).status_code == 200
    response = await client.post(
        "/api/internal/plugin/webhook",
        json={"secret": SECRET, "event_type_field": "action", "source_name": "second"},
        headers=alice.to("commons"),
    )
    assert response.status_code == 201, response.text
    body = b'{"action": "two"}'
    ambiguous = await client.post(HOOK, content=body, headers=standard_signed(body, "msg_2"))
    assert ambiguous.status_code == 409
    assert ambiguous.json()["code"] == "ambiguous_plugin"
    assert "choices" not in ambiguous.json()  # the sender is anonymous: no instance ids
    chosen = await client.post(
        HOOK + "?community_platform_id=second", content=body, headers=standard_signed(body, "msg_2")
    )
    assert chosen.status_code == 200
    assert await count_rows(runtime, "inbound_webhooks") == 2


async def test_a_disabled_instance_stops_taking_webhooks_at_once(
    client: httpx.AsyncClient, alice: DriverKey, hooked: dict[str, Any], runtime: Runtime
) -> None:
    body = b'{"action": "one"}'
    assert (await client.post(HOOK, content=body, headers=standard_signed(body))).status_code == 200
    response = await client.delete(
        f"/api/internal/plugin/webhook/{hooked['id']}", headers=alice.to("commons")
    )
    assert response.status_code == 204
    body = b'{"action": "two"}'
    gone = await client.post(HOOK, content=body, headers=standard_signed(body, "msg_2"))
    assert gone.status_code == 404
    assert gone.json()["code"] == "plugin_not_enabled"
    assert await count_rows(runtime, "inbound_webhooks") == 1


async def test_an_instance_that_keeps_changing_is_a_503_and_stores_nothing(
    client: httpx.AsyncClient,
    hooked: dict[str, Any],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every look at the instance finds it changed again by the time the webhook is stored: the
    platform is asked to retry, and nothing is stored meanwhile."""
    look_up = inbox._load_targets
    looks = 0

    async def always_stale(*args: Any) -> tuple[Target, ...]:
        nonlocal looks
        looks += 1
        found = await look_up(*args)
        return tuple(replace(t, config_version=t.config_version - looks) for t in found)

    monkeypatch.setattr(inbox, "_load_targets", always_stale)
    body = b'{"action": "opened"}'
    response = await client.post(HOOK, content=body, headers=standard_signed(body))
    assert response.status_code == 503
    assert response.json()["code"] == "plugin_changing"
    assert await count_rows(runtime, "inbound_webhooks") == 0


async def test_a_forged_webhook_after_good_ones_is_counted_once(
    client: httpx.AsyncClient, hooked: dict[str, Any], runtime: Runtime
) -> None:
    """The route checks a signature against what it remembers, then against the database
    before refusing; the rejection is still one in the metrics."""

    def rejected() -> float:
        return sum(
            sample.value
            for family in metrics.REGISTRY.collect()
            if family.name == "metagov_webhooks_rejected"
            for sample in family.samples
            if sample.name.endswith("_total")
        )

    body = b'{"action": "opened"}'
    assert (await client.post(HOOK, content=body, headers=standard_signed(body))).status_code == 200
    before = rejected()
    other_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    forged = standard_signed(body, "msg_forged", secret=other_secret)
    assert (await client.post(HOOK, content=body, headers=forged)).status_code == 401
    assert rejected() == before + 1


@pytest.mark.parametrize(
    ("field", "value"), [("source_name", ""), ("source_name", "  "), ("event_type_field", "")]
)
async def test_a_blank_name_is_refused_and_the_plain_hook_url_keeps_working(
    client: httpx.AsyncClient,
    alice: DriverKey,
    hooked: dict[str, Any],
    runtime: Runtime,
    field: str,
    value: str,
) -> None:
    """A value that names something (the sender, the event type's field) cannot be blank: a
    blank source would make a second instance and the community's plain hook URL ambiguous."""
    refused = await client.post(
        "/api/internal/plugin/webhook",
        json={"secret": SECRET, field: value},
        headers=alice.to("commons"),
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == ["body", field]
    assert await count_rows(runtime, "plugin_instances") == 2  # randomness and the hook
    body = b'{"action": "still"}'
    assert (await client.post(HOOK, content=body, headers=standard_signed(body))).status_code == 200
