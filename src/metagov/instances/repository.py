"""Every statement about plugin instances and their periodic task schedules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.models import Driver, PluginInstance, TaskSchedule
from metagov.errors import Conflict

# Built once: it runs on every action and process call.
_INSTANCES_OF = (
    select(PluginInstance)
    .where(
        PluginInstance.community_id == bindparam("community_id"),
        PluginInstance.name == bindparam("name"),
    )
    .order_by(PluginInstance.id)
)


async def instances_of(session: AsyncSession, community_id: int, name: str) -> list[PluginInstance]:
    """The community's instances of plugin ``name``, by id."""
    params = {"community_id": community_id, "name": name}
    return list((await session.scalars(_INSTANCES_OF, params)).all())


async def all_of_community(session: AsyncSession, community_id: int) -> list[PluginInstance]:
    return list(
        (
            await session.scalars(
                select(PluginInstance)
                .where(PluginInstance.community_id == community_id)
                .order_by(PluginInstance.id)
            )
        ).all()
    )


async def get(
    session: AsyncSession, community_id: int, name: str, instance_id: int, *, lock: bool = False
) -> PluginInstance | None:
    query = select(PluginInstance).where(
        PluginInstance.id == instance_id,
        PluginInstance.community_id == community_id,
        PluginInstance.name == name,
    )
    if lock:
        query = query.with_for_update()
    found: PluginInstance | None = await session.scalar(query)
    return found


async def by_platform_id(
    session: AsyncSession, community_id: int, name: str, platform_id: str
) -> PluginInstance | None:
    found: PluginInstance | None = await session.scalar(
        select(PluginInstance).where(
            PluginInstance.community_id == community_id,
            PluginInstance.name == name,
            PluginInstance.community_platform_id == platform_id,
        )
    )
    return found


async def by_id(session: AsyncSession, instance_id: int) -> PluginInstance | None:
    return await session.get(PluginInstance, instance_id)


async def add(session: AsyncSession, instance: PluginInstance) -> None:
    """Insert ``instance``; a second instance with the same platform id is a 409, and so is
    one whose platform tenant another instance holds (``platform_tenant_taken``)."""
    session.add(instance)
    await _flush_unique(session, instance)


async def save_changes(session: AsyncSession, instance: PluginInstance) -> None:
    """Write the changes made to ``instance``, under the same uniqueness rules as :func:`add`."""
    await _flush_unique(session, instance)


async def _flush_unique(session: AsyncSession, instance: PluginInstance) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        tenant = instance.platform_tenant
        if tenant is not None and await tenant_owner(session, instance.name, tenant) not in (
            None,
            instance.id,
        ):
            raise tenant_taken(instance.name, tenant) from None
        raise Conflict(
            f"plugin {instance.name!r} already has an instance with community_platform_id "
            f"{instance.community_platform_id!r} in this community"
        ) from None


def tenant_taken(name: str, tenant: str) -> Conflict:
    return Conflict(
        f"{name} tenant {tenant!r} is already connected to another community; "
        "a tenant's events can reach only one",
        code="platform_tenant_taken",
    )


async def tenant_owner(session: AsyncSession, name: str, tenant: str) -> int | None:
    """The id of the instance of plugin ``name`` that holds the platform tenant, if any."""
    found: int | None = await session.scalar(
        select(PluginInstance.id).where(
            PluginInstance.name == name, PluginInstance.platform_tenant == tenant
        )
    )
    return found


async def lock(session: AsyncSession, instance: PluginInstance) -> PluginInstance:
    """Bring ``instance`` (perhaps read elsewhere) into ``session`` with its row locked and its
    state and secrets re-read, so that concurrent calls keep each other's writes."""
    if instance not in session:
        instance = await session.merge(instance, load=False)
    await session.refresh(instance, ["state", "secrets", "config_version"], with_for_update=True)
    return instance


async def remove(session: AsyncSession, instance: PluginInstance) -> None:
    await session.delete(instance)
    await session.flush()


async def with_secrets(session: AsyncSession) -> Sequence[PluginInstance]:
    return (
        await session.scalars(select(PluginInstance).where(PluginInstance.secrets.is_not(None)))
    ).all()


async def all_drivers(session: AsyncSession) -> Sequence[Driver]:
    return (await session.scalars(select(Driver))).all()


# --- periodic tasks -----------------------------------------------------------------------------


async def instances_named(session: AsyncSession, names: Sequence[str]) -> Sequence[PluginInstance]:
    return (
        await session.scalars(select(PluginInstance).where(PluginInstance.name.in_(names)))
    ).all()


async def task_schedules(session: AsyncSession) -> dict[tuple[int, str], TaskSchedule]:
    return {
        (row.plugin_instance_id, row.task_name): row
        for row in await session.scalars(select(TaskSchedule))
    }


def add_task_schedule(session: AsyncSession, instance_id: int, task: str, when: datetime) -> None:
    session.add(TaskSchedule(plugin_instance_id=instance_id, task_name=task, next_run_at=when))


async def claim_task(
    session: AsyncSession, instance_id: int, task: str, now: datetime, next_run: datetime
) -> bool:
    """Move the task's next run to ``next_run`` if it was due: of two workers, one wins."""
    claimed = await session.execute(
        update(TaskSchedule)
        .where(
            TaskSchedule.plugin_instance_id == instance_id,
            TaskSchedule.task_name == task,
            TaskSchedule.next_run_at <= now,
        )
        .values(next_run_at=next_run)
        .execution_options(synchronize_session=False)
    )
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


async def set_task_error(
    session: AsyncSession, instance_id: int, task: str, error: str | None
) -> None:
    await session.execute(
        update(TaskSchedule)
        .where(TaskSchedule.plugin_instance_id == instance_id, TaskSchedule.task_name == task)
        .values(last_error=error)
        .execution_options(synchronize_session=False)
    )


async def forget_tasks(session: AsyncSession, instance_id: int) -> None:
    await session.execute(
        delete(TaskSchedule).where(TaskSchedule.plugin_instance_id == instance_id)
    )
