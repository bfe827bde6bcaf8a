"""Events for Drivers: recording them (the outbox), subscriptions, and reading them back.

An event and its deliveries are written in the same transaction as the change that caused it, so
a Driver hears about exactly the changes that were committed. Each community numbers its events
(``seq``) under a row lock on the community, so numbers follow commit order and deliveries can
keep that order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.models import Community, Delivery, Driver, Event, Process
from metagov.jobs.queue import Job, ring_after_commit

log = logging.getLogger(__name__)


def _storable(value: Any) -> Any:
    """Replace NUL characters (which PostgreSQL cannot store) in platform data with U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def partition_of(community_id: int, url: str) -> str:
    """Deliveries to one endpoint about one community keep their order within this key."""
    return hashlib.sha256(f"{community_id}|{url}".encode()).hexdigest()[:32]


def deliver_job(partition: str, seq: int) -> Job:
    # The key names the head's seq, so each new event rings once and a later one is not
    # swallowed by a job that is already finishing.
    return Job.of("deliver", partition, key=f"deliver:{partition}:{seq}")


def subscribed(patterns: Sequence[str] | None, event_type: str) -> bool:
    return patterns is None or any(fnmatchcase(event_type, p) for p in patterns)


# Statements of every event, built once: building one costs more than running it.
_EVENT_URL = (
    select(Driver.event_url)
    .where(Driver.id == Community.driver_id, Driver.revoked_at.is_(None))
    .scalar_subquery()
)
_NUMBER = (
    update(Community)
    .where(Community.id == bindparam("community_id"))
    .values(last_event_seq=Community.last_event_seq + 1)
    .returning(
        Community.last_event_seq,
        Community.driver_id,
        Community.subscribed_event_types,
        _EVENT_URL,
    )
    .execution_options(synchronize_session=False)
)
_INSERT_EVENT = insert(Event).returning(Event.id)
_INSERT_DELIVERY = insert(Delivery)


async def record_event(
    session: AsyncSession,
    community_id: int,
    *,
    source: str,
    event_type: str,
    data: dict[str, Any],
    initiator: dict[str, Any] | None = None,
    process: Process | None = None,
) -> int:
    """Store an event and a delivery for each endpoint that should receive it; returns its id.

    Three statements: number the event under the community's row lock (reading the Driver's
    event URL in the same statement), insert it, insert its deliveries. They are Core
    statements: nothing here needs the session's identity map.
    """
    seq, driver_id, patterns, driver_url = (
        await session.execute(_NUMBER, {"community_id": community_id})
    ).one()
    process_id = process.id if process is not None else None
    stored_type = _storable(event_type)
    event_id = (
        await session.execute(
            _INSERT_EVENT,
            {
                "community_id": community_id,
                "seq": seq,
                "source": source,
                "event_type": stored_type,
                "data": _storable(data),
                "initiator": _storable(initiator),
                "process_id": process_id,
            },
        )
    ).scalar_one()
    log.info(
        "event recorded",
        extra={
            "event_id": event_id,
            "community_id": community_id,
            "event_type": stored_type,
            "process_id": process_id,
        },
    )

    targets: list[tuple[str, str]] = []
    if driver_url and subscribed(patterns, event_type):
        targets.append(("driver", driver_url))
    if process is not None and process.callback_url:
        targets.append(("callback", process.callback_url))
    if not targets:
        return event_id
    deliveries = []
    for target, url in targets:
        partition = partition_of(community_id, url)
        deliveries.append(
            {
                "event_id": event_id,
                "community_id": community_id,
                "driver_id": driver_id,
                "target": target,
                "url": url,
                "partition": partition,
                "seq": seq,
            }
        )
        ring_after_commit(session, deliver_job(partition, seq))
    await session.execute(_INSERT_DELIVERY, deliveries)
    return event_id


def _iso(moment: datetime) -> str:
    """UTC times as the API writes them (``…Z``), so events and responses look alike."""
    return moment.isoformat().replace("+00:00", "Z")


def process_record(process: Process, community_slug: str) -> dict[str, Any]:
    """A process as Drivers see it, in API responses and in process events."""
    return {
        "id": process.id,
        "name": process.full_name,
        "community": community_slug,
        "status": process.status,
        "url": process.url,
        "outcome": process.outcome,
        "errors": process.errors,
        "closing_at": _iso(process.closing_at) if process.closing_at else None,
        "created_at": _iso(process.created_at),
        "updated_at": _iso(process.updated_at),
    }


async def record_process_event(
    session: AsyncSession, community: Community, process: Process
) -> int:
    """Tell the Driver (and the process's callback URL) that a process changed.

    The type says what happened: ``process.completed``, ``process.failed``,
    ``process.cancelled``, or ``process.updated`` when only the outcome changed.
    """
    status = process.status if process.status in ("completed", "failed", "cancelled") else "updated"
    return await record_event(
        session,
        community.id,
        source=process.plugin_name,
        event_type=f"process.{status}",
        data=process_record(process, community.slug),
        process=process,
    )


def envelope(event: Event, community_slug: str) -> dict[str, Any]:
    """The JSON a Driver receives; field names are those of the original Metagov."""
    return {
        "id": f"evt_{event.id}",
        "community": community_slug,
        "source": event.source,
        "event_type": event.event_type,
        "timestamp": str(event.created_at.timestamp()),
        "data": event.data,
        "initiator": event.initiator,
        "seq": event.seq,
    }


async def list_events(
    session: AsyncSession,
    driver: Driver,
    *,
    community: Community | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The Driver's events with an id greater than ``after``, oldest first."""
    query = (
        select(Event, Community.slug)
        .join(Community, Community.id == Event.community_id)
        .where(Community.driver_id == driver.id, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    )
    if community is not None:
        query = query.where(Event.community_id == community.id)
    rows = (await session.execute(query)).all()
    return [{"event_id": event.id, **envelope(event, slug)} for event, slug in rows]


async def set_subscriptions(
    session: AsyncSession, community: Community, patterns: list[str] | None
) -> None:
    community.subscribed_event_types = patterns
    await session.flush()
