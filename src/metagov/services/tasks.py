"""Plugins' periodic tasks: each runs for every enabled instance, on its own interval.

The next run time is a row per (instance, task), claimed with a conditional UPDATE, so however
many workers sweep, each period runs once; one instance's failure is recorded on its row and
never stops the others.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.base import utcnow
from metagov.db.models import Community, PluginInstance, TaskSchedule
from metagov.jobs.queue import unit_of_work
from metagov.runtime import Runtime
from metagov.services import plugins as plugin_service

log = logging.getLogger(__name__)


async def due_tasks(
    session: AsyncSession, runtime: Runtime, now: datetime
) -> list[tuple[int, str]]:
    """(instance id, task name) pairs due to run; creates schedules for new instances."""
    with_tasks = [spec for spec in runtime.registry if spec.tasks]
    if not with_tasks:
        return []
    instances = await session.scalars(
        select(PluginInstance).where(PluginInstance.name.in_([s.name for s in with_tasks]))
    )
    known = {
        (row.plugin_instance_id, row.task_name): row
        for row in await session.scalars(select(TaskSchedule))
    }
    due = []
    for instance in instances:
        for name in runtime.registry.get(instance.name).tasks:
            row = known.get((instance.id, name))
            if row is None:
                session.add(
                    TaskSchedule(plugin_instance_id=instance.id, task_name=name, next_run_at=now)
                )
                due.append((instance.id, name))
            elif row.next_run_at <= now:
                due.append((instance.id, name))
    await session.flush()
    return due


async def run_task(runtime: Runtime, instance_id: int, task_name: str) -> bool:
    """Run one periodic task for one instance if it is still due; returns whether it ran."""
    now = utcnow()
    async with unit_of_work(runtime) as session:
        instance = await session.get(PluginInstance, instance_id)
        if instance is None or instance.suspended_at is not None:
            return False
        spec = runtime.registry.get(instance.name)
        task = spec.tasks.get(task_name)
        if task is None:
            return False
        claimed = await session.execute(
            update(TaskSchedule)
            .where(
                TaskSchedule.plugin_instance_id == instance_id,
                TaskSchedule.task_name == task_name,
                TaskSchedule.next_run_at <= now,
            )
            .values(next_run_at=now + timedelta(seconds=task.every_seconds))
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return False
    try:
        async with unit_of_work(runtime) as session:
            instance = await session.get_one(PluginInstance, instance_id)
            community = await session.get_one(Community, instance.community_id)
            ctx = plugin_service.build_context(runtime, spec, community, instance)
            await plugin_service.call_plugin(spec, ctx, lambda: task.method(ctx))
            await plugin_service.save_effects(session, runtime, instance, ctx)
        error = None
    except Exception as exc:
        log.exception("task %s.%s failed for instance %s", spec.name, task_name, instance_id)
        error = f"{type(exc).__name__}: {exc}"[:1000]
    async with unit_of_work(runtime) as session:
        await session.execute(
            update(TaskSchedule)
            .where(
                TaskSchedule.plugin_instance_id == instance_id,
                TaskSchedule.task_name == task_name,
            )
            .values(last_error=error)
            .execution_options(synchronize_session=False)
        )
    return error is None
