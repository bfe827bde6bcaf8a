"""Plugins' periodic tasks: run for every enabled instance on their interval, once per period
however many sweeps race, and one instance's failure never stops another's."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from metagov.db.base import utcnow
from metagov.db.models import PluginInstance, TaskSchedule
from metagov.instances.handlers import run_task
from metagov.jobs.sweeper import sweep
from metagov.runtime import Runtime
from tests.conftest import DriverKey


async def enable(client: httpx.AsyncClient, driver: DriverKey, team: str) -> int:
    response = await client.post(
        "/api/internal/plugin/echo",
        json={"team_id": team, "api_token": "t"},
        headers=driver.to("commons"),
    )
    assert response.status_code == 201
    return int(response.json()["id"])


async def ticks(runtime: Runtime, instance_id: int) -> int:
    async with runtime.db.snapshot() as session:
        instance = await session.get_one(PluginInstance, instance_id)
        return int(instance.state.get("ticks", 0))


async def schedules(runtime: Runtime) -> dict[int, TaskSchedule]:
    async with runtime.db.snapshot() as session:
        rows = await session.scalars(select(TaskSchedule))
        return {row.plugin_instance_id: row for row in rows}


async def test_tasks_run_once_per_period_for_each_instance(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    good = await enable(client, alice, "T1")
    broken = await enable(client, alice, "broken")

    report = await sweep(runtime)  # schedules the new instances, due at once
    assert report.tasks == 2
    results = await asyncio.gather(
        run_task(runtime, good, "tick"),
        run_task(runtime, good, "tick"),
        run_task(runtime, broken, "tick"),
    )
    assert sorted(results) == [False, False, True]  # one good run; a duplicate; a failure
    assert await ticks(runtime, good) == 1

    rows = await schedules(runtime)
    assert rows[good].last_error is None
    assert rows[broken].last_error == "RuntimeError: the platform is down"
    due_in = rows[good].next_run_at - utcnow()
    assert timedelta(minutes=4) < due_in <= timedelta(minutes=5)
    assert (await sweep(runtime)).tasks == 0  # not due again yet

    async with runtime.unit_of_work() as session:
        await session.execute(update(TaskSchedule).values(next_run_at=utcnow()))
    assert (await sweep(runtime)).tasks == 2
    assert await run_task(runtime, good, "tick")
    assert await ticks(runtime, good) == 2
