"""What the console shows and repairs, through its pages and its service: figures of the
overview, a dead delivery's attempts, replays (one, a selection, all since a time), the inbox's
retry, endpoints, secret rotation, closing a process, the audit log; and the operators' CLI."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from metagov import signing
from metagov.cli import app as cli
from metagov.console import service as console
from metagov.console.security import CookieSigner, SignInLimiter
from metagov.console.svg import Series, bar_chart
from metagov.crypto import generate_key
from metagov.db.base import utcnow
from metagov.db.models import (
    AuditEntry,
    Delivery,
    DeliveryFailure,
    Driver,
    InboundWebhook,
    Process,
)
from metagov.health.service import Heartbeat
from metagov.jobs.queue import LocalQueue
from metagov.jobs.sweeper import due_jobs, run_job
from metagov.runtime import Runtime
from tests.conftest import DriverKey, make_community, plug_queue
from tests.console.conftest import OPERATOR
from tests.receiver import DriverReceiver

PLUGIN_SECRET = "whsec_" + "c2VjcmV0LXBsdWdpbi12YWx1ZS0xMjM0NTY3ODkwYWI="


async def run_due(runtime: Runtime, rounds: int = 10) -> None:
    """Run what is due until nothing is (the sweeper's work, done by the test)."""
    for _ in range(rounds):
        jobs, _ = await due_jobs(runtime)
        if not jobs:
            return
        for job in jobs:
            await run_job(runtime, job)


async def audit(runtime: Runtime) -> list[AuditEntry]:
    async with runtime.db.snapshot() as session:
        return list((await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all())


async def lucky(client: httpx.AsyncClient, driver: DriverKey, number: int) -> None:
    response = await client.post(
        "/api/internal/action/randomness.set-lucky-number",
        json={"parameters": {"number": number}},
        headers=driver.to("commons"),
    )
    assert response.status_code == 200, response.text


@pytest.fixture
async def receiver() -> AsyncIterator[DriverReceiver]:
    async with DriverReceiver(failures=2, fail_with=500).running() as running:
        yield running


@pytest.fixture
async def with_dead_delivery(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    community: dict[str, Any],
    receiver: DriverReceiver,
) -> Delivery:
    """Alice's event URL is the receiver, which fails twice: with one retry, her first event's
    delivery dies."""
    runtime.settings.delivery_retry_schedule = [0.0]
    async with runtime.unit_of_work() as session:
        driver = (await session.scalars(select(Driver).where(Driver.name == "alice"))).one()
        driver.event_url = receiver.url
    await lucky(client, alice, 7)
    await run_due(runtime)
    async with runtime.db.snapshot() as session:
        delivery = (await session.scalars(select(Delivery))).one()
    assert delivery.status == "dead"
    return delivery


async def test_a_dead_delivery_shows_each_failed_attempt(
    client: httpx.AsyncClient, runtime: Runtime, with_dead_delivery: Delivery, csrf: str
) -> None:
    async with runtime.db.snapshot() as session:
        failures = (await session.scalars(select(DeliveryFailure))).all()
    assert [(f.delivery_id, f.status_code, f.error) for f in failures] == [
        (with_dead_delivery.id, 500, "HTTP 500"),
    ] * 2
    page = await client.get(f"/console/deliveries/{with_dead_delivery.id}")
    assert page.status_code == 200
    assert page.text.count("<td>500</td>") == 2
    listed = await client.get("/console/deliveries", params={"status": "dead"})
    assert f'id="delivery-{with_dead_delivery.id}"' in listed.text
    for status in ("succeeded", "pending", "failing"):
        other = await client.get("/console/deliveries", params={"status": status})
        assert f'id="delivery-{with_dead_delivery.id}"' not in other.text
    by_community = await client.get("/console/deliveries", params={"community": "elsewhere"})
    assert f'id="delivery-{with_dead_delivery.id}"' not in by_community.text


async def test_replaying_one_delivery_from_the_console_sends_it_again(
    client: httpx.AsyncClient,
    runtime: Runtime,
    with_dead_delivery: Delivery,
    receiver: DriverReceiver,
    csrf: str,
) -> None:
    response = await client.post(
        "/console/deliveries/replay",
        data={
            "csrf_token": csrf,
            "only": str(with_dead_delivery.id),
            "back": "/console/deliveries",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/deliveries"
    await run_due(runtime)
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert receiver.received[2].headers["webhook-id"] == f"evt_{with_dead_delivery.event_id}"
    [entry] = [e for e in await audit(runtime) if e.action == "deliveries.replayed"]
    assert (entry.operator, entry.target, entry.detail) == (
        OPERATOR,
        f"deliveries {with_dead_delivery.id}",
        {"ids": [with_dead_delivery.id]},
    )
    # The page the form came back to says what happened.
    page = await client.get(response.headers["location"])
    assert "1 delivery queued to be sent again." in page.text


async def test_replaying_a_selection_and_all_since_a_time(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    with_dead_delivery: Delivery,
    receiver: DriverReceiver,
    csrf: str,
) -> None:
    receiver.failures = 4  # the next two events die too
    await lucky(client, alice, 8)
    await lucky(client, alice, 9)
    await run_due(runtime)
    async with runtime.db.snapshot() as session:
        dead = (await session.scalars(select(Delivery).order_by(Delivery.id))).all()
    assert [d.status for d in dead] == ["dead"] * 3
    response = await client.post(
        "/console/deliveries/replay",
        data={"csrf_token": csrf, "delivery_id": [str(dead[0].id), str(dead[2].id)]},
    )
    assert response.status_code == 303
    await run_due(runtime)
    async with runtime.db.snapshot() as session:
        statuses = [d.status for d in (await session.scalars(select(Delivery))).all()]
    assert sorted(statuses) == ["dead", "succeeded", "succeeded"]

    # "Since" a time after every delivery was created replays none; before, the one left.
    later = (utcnow() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    await client.post("/console/deliveries/replay", data={"csrf_token": csrf, "since": later})
    earlier = (utcnow() - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    response = await client.post(
        "/console/deliveries/replay", data={"csrf_token": csrf, "since": earlier}
    )
    page = await client.get(response.headers["location"])
    assert "1 delivery queued to be sent again." in page.text
    await run_due(runtime)
    async with runtime.db.snapshot() as session:
        statuses = [d.status for d in (await session.scalars(select(Delivery))).all()]
    assert statuses == ["succeeded"] * 3
    counts = [e.detail.get("count") for e in await audit(runtime) if "since" in e.target]
    assert counts == [0, 1]


async def test_a_bad_replay_changes_nothing_and_says_why(
    client: httpx.AsyncClient, runtime: Runtime, with_dead_delivery: Delivery, csrf: str
) -> None:
    for data in ({}, {"since": "yesterday"}, {"only": "999999"}):
        response = await client.post(
            "/console/deliveries/replay", data={"csrf_token": csrf, **data}
        )
        assert response.status_code == 303
        page = await client.get(response.headers["location"])
        assert 'class="flash error"' in page.text, data
    async with runtime.db.snapshot() as session:
        assert (await session.get_one(Delivery, with_dead_delivery.id)).status == "dead"
    assert not [e for e in await audit(runtime) if e.action == "deliveries.replayed"]


async def test_overview_counts_and_plots(
    client: httpx.AsyncClient, runtime: Runtime, with_dead_delivery: Delivery, csrf: str
) -> None:
    found = await console.overview(runtime, embedded=False)
    [alice] = found.drivers
    assert (alice.pending, alice.failing, alice.dead) == (0, 0, 1)
    assert sum(alice.flows["last hour"].recorded) == 1
    assert sum(alice.flows["last day"].delivered) == 0
    assert alice.latency_p50 is None
    assert found.worker == console.WorkerStatus(
        "not seen", "no worker has ever reported to this database"
    )
    page = await client.get("/console")
    assert page.text.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 2
    assert "Last hour: 1 recorded, 0 delivered" in page.text


async def test_inbox_retry_handles_a_failed_webhook_again(
    client: httpx.AsyncClient, runtime: Runtime, alice: DriverKey, csrf: str
) -> None:
    await make_community(
        client, alice, "commons", [{"name": "webhook", "config": {"secret": PLUGIN_SECRET}}]
    )
    body = b"not json"
    response = await client.post(
        "/api/hooks/commons/webhook",
        content=body,
        headers=signing.standard_headers([PLUGIN_SECRET], "msg_1", body),
    )
    assert response.status_code == 200
    runtime.settings.inbox_max_attempts = 1
    await run_due(runtime)
    async with runtime.db.snapshot() as session:
        stored = (await session.scalars(select(InboundWebhook))).one()
    assert stored.status == "failed"
    page = await client.get("/console/inbox")
    assert f'id="webhook-{stored.id}"' in page.text
    assert "JSON" in page.text  # the plugin's error

    queue = LocalQueue()
    rung: list[str] = []

    async def remember(job: Any) -> None:
        rung.append(job.key)

    queue.start(remember)
    plug_queue(runtime, queue)
    response = await client.post(f"/console/inbox/{stored.id}/retry", data={"csrf_token": csrf})
    assert response.status_code == 303
    await queue.join()
    await queue.close()
    async with runtime.db.snapshot() as session:
        again = await session.get_one(InboundWebhook, stored.id)
    assert (again.status, again.attempts) == ("pending", 0)
    assert rung == [f"handle_webhook:i{stored.plugin_instance_id}:{stored.id}"]
    assert (await audit(runtime))[-1].action == "inbox.retried"
    # A handled webhook cannot be retried.
    with pytest.raises(Exception, match="no stored webhook"):
        await console.retry_webhook(runtime, OPERATOR, 999_999)


async def test_endpoint_disable_enable_and_secret_rotation(
    client: httpx.AsyncClient, runtime: Runtime, alice: DriverKey, csrf: str
) -> None:
    async with runtime.db.snapshot() as session:
        driver_id = (await session.scalars(select(Driver))).one().id
    await client.post(
        f"/console/drivers/{driver_id}/endpoint", data={"csrf_token": csrf, "enabled": "false"}
    )
    async with runtime.db.snapshot() as session:
        assert (await session.get_one(Driver, driver_id)).endpoint_disabled_at is not None
    page = await client.get("/console/drivers")
    assert "disabled since" in page.text
    await client.post(
        f"/console/drivers/{driver_id}/endpoint", data={"csrf_token": csrf, "enabled": "true"}
    )
    async with runtime.db.snapshot() as session:
        assert (await session.get_one(Driver, driver_id)).endpoint_disabled_at is None

    for bad in ("", "not-a-secret", "whsec_c2hvcnQ=", "whsec_!!!!"):
        response = await client.post(
            f"/console/drivers/{driver_id}/rotate-secret",
            data={"csrf_token": csrf, "secret": bad, "overlap_hours": "1"},
        )
        page = await client.get(response.headers["location"])
        assert "secret: a Standard Webhooks secret" in page.text
    new = signing.generate_secret()
    response = await client.post(
        f"/console/drivers/{driver_id}/rotate-secret",
        data={"csrf_token": csrf, "secret": new, "overlap_hours": "2"},
    )
    page = await client.get(response.headers["location"])
    assert "New signing secret set for alice" in page.text
    assert new not in page.text
    async with runtime.db.snapshot() as session:
        driver = await session.get_one(Driver, driver_id)
    assert runtime.secrets.decrypt_text(driver.webhook_secret or "") == new
    assert runtime.secrets.decrypt_text(driver.previous_webhook_secret or "") == (
        alice.webhook_secret
    )
    actions = [(e.action, e.detail) for e in await audit(runtime)]
    assert ("driver.secret_rotated", {"overlap_hours": 2.0}) in actions
    assert ("driver.endpoint_disabled", {}) in actions
    assert ("driver.endpoint_enabled", {}) in actions
    assert all(new not in str(detail) for _, detail in actions)


async def test_closing_a_process_from_the_console(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    community: dict[str, Any],
    csrf: str,
) -> None:
    response = await client.post(
        "/api/internal/process/randomness.delayed-stochastic-vote",
        json={"options": ["a", "b"], "delay_seconds": 3600},
        headers=alice.to("commons"),
    )
    process_id = response.json()["id"]
    page = await client.get("/console/processes", params={"status": "pending"})
    assert f'action="/console/processes/{process_id}/close"' in page.text
    response = await client.post(
        f"/console/processes/{process_id}/close",
        data={"csrf_token": csrf, "back": "/console/processes?status=pending"},
    )
    assert response.headers["location"] == "/console/processes?status=pending"
    async with runtime.db.snapshot() as session:
        process = await session.get_one(Process, process_id)
    assert process.status == "completed"
    assert process.outcome is not None
    entry = (await audit(runtime))[-1]
    assert (entry.action, entry.detail) == ("process.closed", {"status": "completed"})
    # Closing it again is refused, and says why.
    response = await client.post(
        f"/console/processes/{process_id}/close", data={"csrf_token": csrf}
    )
    page = await client.get(response.headers["location"])
    assert "already completed" in page.text
    filtered = await client.get("/console/processes", params={"status": "pending"})
    assert f'id="process-{process_id}"' not in filtered.text


async def test_communities_search_and_detail(
    client: httpx.AsyncClient, runtime: Runtime, alice: DriverKey, csrf: str
) -> None:
    await make_community(client, alice, "garden-club", [])
    await make_community(
        client,
        alice,
        "chess_100",
        [{"name": "randomness", "config": {"default_low": 1, "default_high": 6}}],
    )
    page = await client.get("/console/communities", params={"q": "GARDEN"})
    assert "garden-club" in page.text and "chess_100" not in page.text
    # "_" is a character to look for, not LIKE's wildcard (which would match "n-c").
    page = await client.get("/console/communities", params={"q": "n_c"})
    assert "garden-club" not in page.text
    page = await client.get("/console/communities", params={"q": "s_1"})
    assert "chess_100" in page.text and "garden-club" not in page.text
    page = await client.get("/console/communities/chess_100")
    assert page.status_code == 200
    assert "randomness" in page.text and "default_high" in page.text
    missing = await client.get("/console/communities/nowhere")
    assert missing.status_code == 404


async def test_every_repair_and_sign_in_is_in_the_audit_log_page(
    client: httpx.AsyncClient, runtime: Runtime, csrf: str
) -> None:
    page = await client.get("/console/audit")
    assert "console.signed_in" in page.text
    assert "operator.created" in page.text


async def test_workers_are_seen_through_their_heartbeats_in_the_database(runtime: Runtime) -> None:
    async def status() -> console.WorkerStatus:
        async with runtime.db.snapshot() as session:
            return await console.worker_status(runtime, session, embedded=False)

    assert await status() == console.WorkerStatus(
        "not seen", "no worker has ever reported to this database"
    )
    heartbeat = Heartbeat(runtime.db, runtime.settings, lambda: "running")
    await heartbeat.beat()
    assert await status() == console.WorkerStatus("seen", "1 worker alive, last heard 0 s ago")
    await heartbeat.stop()
    assert await status() == console.WorkerStatus(
        "not seen", "no worker alive; the last one was heard 0 s ago"
    )
    async with runtime.db.snapshot() as session:
        embedded = await console.worker_status(runtime, session, embedded=True)
    assert embedded.state == "embedded"


# --- the operators' CLI ---------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAGOV_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("METAGOV_SECRET_KEYS", generate_key())
    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0


def test_operators_cli(cli_env: None) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["operators", "create", "night-shift"])
    assert created.exit_code == 0, created.output
    password = created.output.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", password)
    again = runner.invoke(cli, ["operators", "create", "night-shift"])
    assert again.exit_code == 1 and "exists" in again.output
    short = runner.invoke(cli, ["operators", "create", "day", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 12" in short.output
    given = runner.invoke(
        cli, ["operators", "create", "day", "--password-stdin"], input="a long passphrase here\n"
    )
    assert given.exit_code == 0
    assert "a long passphrase here" not in given.output
    listed = runner.invoke(cli, ["operators", "list"])
    assert "day\t" in listed.output and "night-shift\t" in listed.output
    assert runner.invoke(cli, ["operators", "set-password", "day"]).exit_code == 0
    assert runner.invoke(cli, ["operators", "remove", "day"]).exit_code == 0
    assert "day\t" not in runner.invoke(cli, ["operators", "list"]).output
    assert runner.invoke(cli, ["operators", "remove", "day"]).exit_code == 1


# --- small parts ------------------------------------------------------------------------------


def test_bar_chart_escapes_labels_and_scales_to_a_round_maximum() -> None:
    svg = str(bar_chart("<b>x</b>", ["a<", "b"], [Series("s&1", [3, 7]), Series("s2", [0, 1])]))
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "a&lt;" in svg and "s&amp;1" in svg
    assert ">10</text>" in svg  # 7 rounds up to 10
    assert svg.count('class="bar series-0"') == 2 and svg.count('class="bar series-1"') == 2


def test_percentile_is_nearest_rank() -> None:
    assert console.percentile([], 0.5) is None
    assert console.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert console.percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_limiter_counts_per_address_within_its_window() -> None:
    limiter = SignInLimiter(attempts=2, window=60)
    assert limiter.allow("a", now=0) is None
    assert limiter.allow("a", now=1) is None
    assert limiter.allow("a", now=2) == pytest.approx(58)
    assert limiter.allow("b", now=2) is None
    assert limiter.allow("a", now=61) is None


def test_cookie_signatures_survive_key_rotation_only_with_the_old_key() -> None:
    old, new = generate_key(), generate_key()
    signed = CookieSigner([old]).sign("token")
    assert CookieSigner([new, old]).unsign(signed) == "token"
    assert CookieSigner([new]).unsign(signed) is None
    assert CookieSigner([old]).unsign(signed.replace("token", "other")) is None
