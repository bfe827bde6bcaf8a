"""Plugins' periodic tasks (the ``run_task`` job): each runs for every enabled instance, on its
own interval.

The next run time is a row per (instance, task), claimed with a conditional UPDATE, so however
many workers sweep, each period runs once; one instance's failure is recorded on its row and
never stops the others. The task runs on a snapshot with no transaction open; its effects are
saved after it returns.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from metagov.db.base import utcnow
from metagov.db.engine import Session
from metagov.db.models import Community
from metagov.instances import repository
from metagov.instances.service import build_context, call_plugin, has_effects, save_effects
from metagov.plugins.registry import PluginRegistry
from metagov.runtime import Runtime

log = logging.getLogger(__name__)


async def due_tasks(
    session: Session, registry: PluginRegistry, now: datetime
) -> list[tuple[int, str]]:
    """(instance id, task name) pairs due to run; creates schedules for new instances."""
    with_tasks = [spec.name for spec in registry if spec.tasks]
    if not with_tasks:
        return []
    known = await repository.task_schedules(session)
    due = []
    for instance in await repository.instances_named(session, with_tasks):
        for name in registry.get(instance.name).tasks:
            row = known.get((instance.id, name))
            if row is None:
                repository.add_task_schedule(session, instance.id, name, now)
                due.append((instance.id, name))
            elif row.next_run_at <= now:
                due.append((instance.id, name))
    await session.flush()
    return due


async def run_task(runtime: Runtime, instance_id: int, task_name: str) -> bool:
    """Run one periodic task for one instance if it is still due; returns whether it ran."""
    now = utcnow()
    async with runtime.unit_of_work() as session:
        instance = await repository.by_id(session, instance_id)
        if instance is None or instance.suspended_at is not None:
            return False
        spec = runtime.registry.get(instance.name)
        task = spec.tasks.get(task_name)
        if task is None:
            return False
        next_run = now + timedelta(seconds=task.every_seconds)
        if not await repository.claim_task(session, instance_id, task_name, now, next_run):
            return False
        community = await session.get_one(Community, instance.community_id)
        slug = community.slug
    error = None
    try:
        ctx = build_context(runtime, spec, slug, instance)
        await call_plugin(spec, ctx, lambda: task.method(ctx))
        if has_effects(ctx):
            async with runtime.unit_of_work() as session:
                await save_effects(session, runtime, instance, ctx)
    except Exception as exc:
        log.exception("task %s.%s failed for instance %s", spec.name, task_name, instance_id)
        error = f"{type(exc).__name__}: {exc}"[:1000]
    async with runtime.unit_of_work() as session:
        await repository.set_task_error(session, instance_id, task_name, error)
    return error is None
