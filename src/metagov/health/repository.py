"""Every statement about workers' heartbeats."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from metagov.db.models import WorkerHeartbeat

STOPPED = "stopped"


async def beat(
    conn: AsyncConnection,
    *,
    worker_id: str,
    hostname: str,
    pid: int,
    state: str,
    started_at: datetime,
    now: datetime,
) -> None:
    """Insert or refresh one worker's row."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(WorkerHeartbeat).values(
        id=worker_id, hostname=hostname, pid=pid, state=state, started_at=started_at, seen_at=now
    )
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[WorkerHeartbeat.id], set_={"state": state, "seen_at": now}
        )
    )


async def mark_stopped(conn: AsyncConnection, worker_id: str, now: datetime) -> None:
    await conn.execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.id == worker_id)
        .values(state=STOPPED, seen_at=now)
    )


async def forget_before(conn: AsyncConnection, before: datetime) -> None:
    """Drop rows of workers not seen since ``before`` (crashed long ago, or stopped)."""
    await conn.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < before))


async def alive_since(session: AsyncSession, since: datetime) -> int:
    """Workers seen since ``since`` and not stopped."""
    found = await session.scalar(
        select(func.count())
        .select_from(WorkerHeartbeat)
        .where(WorkerHeartbeat.seen_at >= since, WorkerHeartbeat.state != STOPPED)
    )
    return int(found or 0)


async def last_seen(session: AsyncSession) -> datetime | None:
    """When any worker was last seen, stopped ones included."""
    found: datetime | None = await session.scalar(select(func.max(WorkerHeartbeat.seen_at)))
    return found


async def all_workers(session: AsyncSession) -> Sequence[WorkerHeartbeat]:
    return (
        await session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.seen_at.desc()))
    ).all()
