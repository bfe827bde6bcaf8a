"""Every statement about governance processes, their leases and their listen keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from metagov.db.base import UTCDateTime
from metagov.db.models import (
    OPEN_PROCESS_STATUSES,
    Community,
    PluginInstance,
    Process,
    ProcessListenKey,
    ProcessStatus,
)

_OPEN = [status.value for status in OPEN_PROCESS_STATUSES]
_PENDING = ProcessStatus.PENDING.value
_NOW = bindparam("now", type_=UTCDateTime())
_LEASE_FREE = or_(Process.lease_until.is_(None), Process.lease_until <= _NOW)


async def insert_leased(session: AsyncSession, process: Process) -> Process:
    """Insert a new process (its lease and version set by the caller)."""
    session.add(process)
    await session.flush()
    return process


async def delete_if_version(session: AsyncSession, process_id: int, version: int) -> None:
    await session.execute(
        delete(Process).where(Process.id == process_id, Process.version == version)
    )


def _claim(*extra: Any) -> Any:
    """Lease an open process whose lease is free (and that meets ``extra``), moving its version;
    returns the new version."""
    return (
        update(Process)
        .where(
            Process.id == bindparam("process_id"),
            Process.status.in_(_OPEN),
            _LEASE_FREE,
            *extra,
        )
        .values(
            lease_until=bindparam("lease", type_=UTCDateTime()),
            version=Process.version + 1,
        )
        .returning(Process.version)
        .execution_options(synchronize_session=False)
    )


_CLAIM = _claim()
# The scheduler's claim: only a pending process whose deadline or update is due and that is not
# waiting to retry a failed hook.
_CLAIM_DUE = _claim(
    Process.status == _PENDING,
    or_(Process.retry_at.is_(None), Process.retry_at <= _NOW),
    or_(Process.closing_at <= _NOW, Process.next_update_at <= _NOW),
)
# A start that never finished (its process is still ``created`` once the lease ran out).
_CLAIM_STALLED = _claim(Process.status == ProcessStatus.CREATED.value)


async def claim(
    conn: AsyncConnection,
    process_id: int,
    now: datetime,
    lease: datetime,
    *,
    due: bool = False,
    stalled: bool = False,
) -> int | None:
    """Lease the process; its new version, or None if it is not open, leased, or not due."""
    statement = _CLAIM_DUE if due else _CLAIM_STALLED if stalled else _CLAIM
    params = {"process_id": process_id, "now": now, "lease": lease}
    version: int | None = (await conn.execute(statement, params)).scalar_one_or_none()
    return version


_SNAPSHOT = (
    select(Process, Community.slug, PluginInstance)
    .join(Community, Community.id == Process.community_id)
    .outerjoin(PluginInstance, PluginInstance.id == Process.plugin_instance_id)
    .where(Process.id == bindparam("process_id"))
)


async def snapshot(
    session: AsyncSession, process_id: int
) -> tuple[Process, str, PluginInstance | None] | None:
    """The process with its community's slug and its instance."""
    found = (await session.execute(_SNAPSHOT, {"process_id": process_id})).one_or_none()
    return None if found is None else (found[0], found[1], found[2])


async def lock_version(session: AsyncSession, process_id: int, version: int) -> Process | None:
    """The process, locked, if it still has ``version`` (nobody took over since)."""
    process = await session.get(Process, process_id, with_for_update=True, populate_existing=True)
    if process is None or process.version != version:
        return None
    return process


async def release(conn: AsyncConnection, process_id: int, version: int) -> None:
    await conn.execute(
        update(Process)
        .where(Process.id == process_id, Process.version == version)
        .values(lease_until=None, version=Process.version + 1)
    )


async def find(
    session: AsyncSession, community_id: int, plugin: str, slug: str, process_id: int
) -> Process | None:
    found: Process | None = await session.scalar(
        select(Process).where(
            Process.id == process_id,
            Process.community_id == community_id,
            Process.plugin_name == plugin,
            Process.name == slug,
        )
    )
    return found


async def list_of_community(
    session: AsyncSession,
    community_id: int,
    *,
    status: str | None,
    plugin: str | None,
    limit: int,
    offset: int,
) -> Sequence[Process]:
    query = select(Process).where(Process.community_id == community_id)
    if status is not None:
        query = query.where(Process.status == status)
    if plugin is not None:
        query = query.where(Process.plugin_name == plugin)
    query = query.order_by(Process.id.desc()).limit(limit).offset(offset)
    return (await session.scalars(query)).all()


async def open_of_instance(session: AsyncSession, instance_id: int) -> Sequence[Process]:
    """The instance's open processes, locked (to cancel them)."""
    return (
        await session.scalars(
            select(Process)
            .where(Process.plugin_instance_id == instance_id, Process.status.in_(_OPEN))
            .order_by(Process.id)
            .with_for_update()
        )
    ).all()


async def replace_listen_keys(
    session: AsyncSession, process_id: int, instance_id: int, keys: Sequence[str]
) -> None:
    await session.execute(delete(ProcessListenKey).where(ProcessListenKey.process_id == process_id))
    if keys:
        session.add_all(
            ProcessListenKey(process_id=process_id, key=key, plugin_instance_id=instance_id)
            for key in keys
        )


_PENDING_OF_INSTANCE = (
    select(Process.id)
    .where(Process.plugin_instance_id == bindparam("instance_id"), Process.status == _PENDING)
    .order_by(Process.id)
)
# Off the (instance, key) index: a webhook costs the same however many other processes are open.
_LISTENING = (
    select(Process.id)
    .where(
        Process.id.in_(
            select(ProcessListenKey.process_id).where(
                ProcessListenKey.plugin_instance_id == bindparam("instance_id"),
                ProcessListenKey.key.in_(bindparam("keys", expanding=True)),
            )
        ),
        Process.status == _PENDING,
    )
    .order_by(Process.id)
)


async def pending_for_webhook(
    session: AsyncSession, instance_id: int, keys: Sequence[str] | None
) -> list[int]:
    """Ids of the instance's pending processes a webhook concerns: those listening to one of
    ``keys``, or all of them if ``keys`` is None."""
    if keys is None:
        found = await session.scalars(_PENDING_OF_INSTANCE, {"instance_id": instance_id})
    else:
        params = {"instance_id": instance_id, "keys": list(keys)}
        found = await session.scalars(_LISTENING, params)
    return list(found.all())


class Due(NamedTuple):
    id: int
    closing_at: datetime | None
    next_update_at: datetime | None


async def due(session: AsyncSession, now: datetime, *, limit: int) -> tuple[list[Due], list[Due]]:
    """Pending processes whose deadline passed, and those due for an update (each with both of
    its moments)."""
    pending = and_(
        Process.status == _PENDING,
        or_(Process.retry_at.is_(None), Process.retry_at <= now),
        or_(Process.lease_until.is_(None), Process.lease_until <= now),
    )
    columns = (Process.id, Process.closing_at, Process.next_update_at)
    closing = await session.execute(
        select(*columns)
        .where(pending, Process.closing_at <= now)
        .order_by(Process.closing_at)
        .limit(limit)
    )
    updating = await session.execute(
        select(*columns)
        .where(pending, Process.next_update_at <= now)
        .order_by(Process.next_update_at)
        .limit(limit)
    )
    return [Due(*row) for row in closing], [Due(*row) for row in updating]


async def stalled(session: AsyncSession, now: datetime, *, limit: int) -> list[int]:
    """Ids of processes whose start never finished (still ``created``, lease run out)."""
    found = await session.scalars(
        select(Process.id)
        .where(
            Process.status == ProcessStatus.CREATED.value,
            Process.lease_until <= now,
        )
        .limit(limit)
    )
    return list(found)


async def open_counts(session: AsyncSession) -> list[tuple[str, int]]:
    rows = await session.execute(
        select(Process.plugin_name, func.count())
        .where(Process.status.in_(_OPEN))
        .group_by(Process.plugin_name)
    )
    return [(plugin, int(count)) for plugin, count in rows.all()]
