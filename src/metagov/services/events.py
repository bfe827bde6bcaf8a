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

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Select,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.base import UTCDateTime, utcnow
from metagov.db.models import Community, Delivery, Driver, Event, Process
from metagov.jobs.queue import Job, ring_after_commit

log = logging.getLogger(__name__)

PENDING = "pending"  # a new delivery's status


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
        _EVENT_URL.label("event_url"),
    )
    .execution_options(synchronize_session=False)
)
_INSERT_EVENT = insert(Event).returning(Event.id)
_INSERT_DELIVERY = insert(Delivery)
# Bind names must differ from the columns of the communities row the statement updates.
_EVENT_COLUMNS = ("source", "event_type", "data", "initiator", "process_id")
_DELIVERY_COLUMNS = (
    "event_id",
    "community_id",
    "driver_id",
    "target",
    "url",
    "partition",
    "seq",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)


def _sql_partition(community_id: ColumnElement[int], url: ColumnElement[str]) -> ColumnElement[str]:
    """:func:`partition_of` computed by PostgreSQL, to the same hex digits."""
    key = func.concat(cast(community_id, Text), "|", url)
    digest = func.encode(func.sha256(func.convert_to(key, "UTF8")), "hex")
    return func.substr(digest, 1, 32)


def _record_statement() -> Select[Any]:
    """PostgreSQL's :func:`record_event` in one statement: number the event under the community's
    row lock (``numbered``), insert it (``event``), and insert its deliveries: the callback's if a
    URL is bound, the Driver's if it has an event URL and subscribes to every event type. (Glob
    subscriptions are matched in Python, so then the Driver's delivery is a second statement.)

    Returns one row: the event, what numbering read, and the partition of each delivery made.
    """
    community_id = bindparam("community_id", type_=Integer())
    now = bindparam("now", type_=UTCDateTime())
    # A Python ``onupdate`` is not applied to an UPDATE inside a WITH: it is given here.
    numbered = _NUMBER.values(updated_at=now).cte("numbered")
    event_values = [bindparam(name, type_=Event.__table__.c[name].type) for name in _EVENT_COLUMNS]
    event = (
        insert(Event)
        .from_select(
            ["community_id", "seq", *_EVENT_COLUMNS, "created_at"],
            select(community_id, numbered.c.last_event_seq, *event_values, now),
        )
        .returning(Event.id, Event.seq)
        .cte("event")
    )

    def delivery(name: str, target: str, url: Any, partition: Any, *when: Any) -> CTE:
        values = (
            select(
                event.c.id,
                community_id,
                numbered.c.driver_id,
                literal(target),
                url,
                partition,
                event.c.seq,
                literal(PENDING),
                literal(0),
                now,
                now,
            )
            .select_from(event.join(numbered, true()))
            .where(*when)
        )
        insert_ = insert(Delivery).from_select(list(_DELIVERY_COLUMNS), values)
        return insert_.returning(Delivery.partition).cte(name)

    every_type = func.coalesce(func.jsonb_typeof(numbered.c.subscribed_event_types), "null")
    to_driver = delivery(
        "to_driver",
        "driver",
        numbered.c.event_url,
        _sql_partition(community_id, numbered.c.event_url),
        numbered.c.event_url.is_not(None),
        numbered.c.event_url != "",
        every_type == "null",
    )
    callback_url = bindparam("callback_url", type_=Text())
    to_callback = delivery(
        "to_callback",
        "callback",
        callback_url,
        bindparam("callback_partition", type_=Text()),
        callback_url.is_not(None),
    )
    return (
        select(
            event.c.id,
            event.c.seq,
            numbered.c.driver_id,
            numbered.c.subscribed_event_types,
            numbered.c.event_url,
            to_driver.c.partition.label("driver_partition"),
        )
        .select_from(event)
        .join(numbered, true())
        .outerjoin(to_driver, true())
        .outerjoin(to_callback, true())
    )


_RECORD = _record_statement()


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

    Number the event under the community's row lock (reading the Driver's event URL in the same
    statement), insert it, insert its deliveries: one statement on PostgreSQL (see
    :func:`_record_statement`), three on SQLite. They are Core statements: nothing here needs the
    session's identity map.
    """
    process_id = process.id if process is not None else None
    callback_url = process.callback_url if process is not None and process.callback_url else None
    event = {
        "community_id": community_id,
        "source": source,
        "event_type": _storable(event_type),
        "data": _storable(data),
        "initiator": _storable(initiator),
        "process_id": process_id,
    }
    if session.get_bind().dialect.name == "postgresql":
        event_id, partitions = await _record_in_one(session, event, event_type, callback_url)
    else:
        event_id, partitions = await _record_in_three(session, event, event_type, callback_url)
    log.debug(
        "event recorded",
        extra={
            "event_id": event_id,
            "community_id": community_id,
            "event_type": event["event_type"],
            "process_id": process_id,
        },
    )
    for partition, seq in partitions:
        ring_after_commit(session, deliver_job(partition, seq))
    return event_id


async def _record_in_one(
    session: AsyncSession, event: dict[str, Any], event_type: str, callback_url: str | None
) -> tuple[int, list[tuple[str, int]]]:
    """Record on PostgreSQL; returns the event's id, and the partition and seq of each delivery."""
    community_id = event["community_id"]
    callback_partition = partition_of(community_id, callback_url) if callback_url else None
    params = {
        **event,
        "now": utcnow(),
        "callback_url": callback_url,
        "callback_partition": callback_partition,
    }
    # On the session's connection: a Core statement needs none of the ORM's work.
    conn = await session.connection()
    row = (await conn.execute(_RECORD, params)).one()
    made = []
    if row.driver_partition is not None:
        made.append(row.driver_partition)
    elif row.event_url and subscribed(row.subscribed_event_types, event_type):
        driver = _delivery(row.id, community_id, row.driver_id, row.seq, "driver", row.event_url)
        await session.execute(_INSERT_DELIVERY, [driver])
        made.append(driver["partition"])
    if callback_partition is not None:
        made.append(callback_partition)
    return row.id, [(partition, row.seq) for partition in made]


async def _record_in_three(
    session: AsyncSession, event: dict[str, Any], event_type: str, callback_url: str | None
) -> tuple[int, list[tuple[str, int]]]:
    """Record on SQLite; returns the event's id, and the partition and seq of each delivery."""
    community_id = event["community_id"]
    numbered = (await session.execute(_NUMBER, {"community_id": community_id})).one()
    seq = numbered.last_event_seq
    event_id = (await session.execute(_INSERT_EVENT, {**event, "seq": seq})).scalar_one()
    targets: list[tuple[str, str]] = []
    if numbered.event_url and subscribed(numbered.subscribed_event_types, event_type):
        targets.append(("driver", numbered.event_url))
    if callback_url:
        targets.append(("callback", callback_url))
    if not targets:
        return event_id, []
    made = [
        _delivery(event_id, community_id, numbered.driver_id, seq, target, url)
        for target, url in targets
    ]
    await session.execute(_INSERT_DELIVERY, made)
    return event_id, [(delivery["partition"], seq) for delivery in made]


def _delivery(
    event_id: int, community_id: int, driver_id: int, seq: int, target: str, url: str
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "community_id": community_id,
        "driver_id": driver_id,
        "target": target,
        "url": url,
        "partition": partition_of(community_id, url),
        "seq": seq,
    }


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
