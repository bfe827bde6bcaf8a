"""``metagov doctor``'s findings on both databases: a healthy embedded gateway, then the things an
operator must hear about (an endpoint disabled by a 410, dead deliveries, no worker, an old
schema), each in words that say what to do."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import update

from metagov.db import migrate
from metagov.db.base import utcnow
from metagov.db.models import Delivery, Driver
from metagov.health.doctor import Finding, Level, examine
from metagov.runtime import Runtime
from tests.conftest import REDIS_URL, DriverKey, make_community, make_settings

LUCKY = "/api/internal/action/randomness.set-lucky-number"


def problems(found: list[Finding] | tuple[Finding, ...]) -> list[str]:
    return [f.message for f in found if f.level is Level.PROBLEM]


async def test_a_healthy_embedded_gateway(database_url: str, alice: DriverKey) -> None:
    found = list(await examine(make_settings(database_url, jobs_in_process=True)))
    assert problems(found) == []
    by_check = {f.check: f for f in found}
    assert set(by_check) == {"settings", "database", "schema", "redis", "workers", "drivers"}
    assert by_check["drivers"].message == "alice: no event URL (events are only recorded)"


async def test_disabled_endpoint_and_dead_deliveries_are_named(
    database_url: str, runtime: Runtime, client: httpx.AsyncClient, alice: DriverKey
) -> None:
    await make_community(client, alice, "commons", [{"name": "randomness", "config": {}}])
    async with runtime.unit_of_work() as session:
        await session.execute(update(Driver).values(event_url="https://driver.example/events"))
    for number in (1, 2, 3):
        response = await client.post(
            LUCKY, json={"parameters": {"number": number}}, headers=alice.to("commons")
        )
        assert response.status_code == 200
    async with runtime.unit_of_work() as session:
        await session.execute(update(Delivery).where(Delivery.seq == 1).values(status="dead"))
        await session.execute(update(Driver).values(endpoint_disabled_at=utcnow()))

    found = list(await examine(make_settings(database_url, jobs_in_process=True)))
    [disabled] = problems(found)
    assert disabled.startswith("alice: its endpoint answered 410 Gone on ")
    assert "2 deliveries wait" in disabled
    assert "`metagov drivers set-event-url alice URL`" in disabled
    [dead] = [f.message for f in found if f.level is Level.WARNING and "dead" in f.message]
    assert dead.startswith("alice: 1 dead deliveries")


async def test_worker_mode_without_a_worker(database_url: str, alice: DriverKey) -> None:
    found = await examine(make_settings(database_url, redis_url=REDIS_URL))
    [missing] = problems(list(found))
    assert missing.startswith("none seen yet: nothing is delivered")


async def test_unreachable_redis_and_old_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    await migrate.upgrade(url, "0002")
    found = list(await examine(make_settings(url, redis_url="redis://127.0.0.1:9/0")))
    schema, redis = problems(found)
    assert schema.startswith("at 0002, newest is "), schema
    assert schema.endswith(": run `metagov db upgrade`"), schema
    assert redis.startswith("cannot reach Redis at METAGOV_REDIS_URL (redis://127.0.0.1:9/0)")
    assert not any(f.check == "workers" for f in found), "skipped: the schema is not there"
