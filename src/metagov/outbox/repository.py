"""Every statement about events and their deliveries.

The hot ones are built once at import (building a statement costs more than running it) and take
bound values. PostgreSQL gets single-statement versions of two paths, behind the same functions
as SQLite's several statements: recording an event with its deliveries, and a delivery's success
together with the claim of its partition's next head.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Row,
    Select,
    Text,
    Update,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from metagov.db.base import UTCDateTime
from metagov.db.models import (
    Community,
    Delivery,
    DeliveryFailure,
    DeliveryStatus,
    DeliveryTarget,
    Driver,
    Event,
)

PENDING = DeliveryStatus.PENDING.value
# A claimed delivery with its event, community slug and Driver secrets (see ``_ATTEMPT``).
AttemptRow = Row[Any]


# The endpoint key of a community's deliveries to its Driver's event URL. It names the Driver's
# endpoint, not its URL: when the Driver moves its URL, the deliveries waiting for it move along
# and keep their place in the order. (It is not a URL, so no callback URL can share it.)
DRIVER_ENDPOINT = "driver:"


def partition_of(community_id: int, endpoint: str) -> str:
    """Deliveries to one endpoint about one community keep their order within this key. The
    endpoint is :data:`DRIVER_ENDPOINT` for the Driver's event URL, or a callback URL."""
    return hashlib.sha256(f"{community_id}|{endpoint}".encode()).hexdigest()[:32]


def endpoint_of(target: DeliveryTarget, url: str) -> str:
    return DRIVER_ENDPOINT if target is DeliveryTarget.DRIVER else url


# --- recording events -------------------------------------------------------------------------

_EVENT_URL = (
    select(Driver.event_url)
    .where(Driver.id == Community.driver_id, Driver.revoked_at.is_(None))
    .scalar_subquery()
)
# Numbers the community's next event under its row lock, and reads where it goes.
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
    "trace_context",
)


@dataclass(frozen=True)
class Numbered:
    """What numbering an event read: where its Driver wants events."""

    seq: int
    driver_id: int
    subscribed_event_types: list[str] | None
    event_url: str | None


@dataclass(frozen=True)
class Recorded:
    """An event stored, and the partitions its deliveries went into."""

    event_id: int
    seq: int
    partitions: list[str]


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

    def delivery(name: str, target: DeliveryTarget, url: Any, partition: Any, *when: Any) -> CTE:
        values = (
            select(
                event.c.id,
                community_id,
                numbered.c.driver_id,
                literal(target.value),
                url,
                partition,
                event.c.seq,
                literal(PENDING),
                literal(0),
                now,
                now,
                bindparam("trace_context", type_=Text()),
            )
            .select_from(event.join(numbered, true()))
            .where(*when)
        )
        insert_ = insert(Delivery).from_select(list(_DELIVERY_COLUMNS), values)
        return insert_.returning(Delivery.partition).cte(name)

    every_type = func.coalesce(func.jsonb_typeof(numbered.c.subscribed_event_types), "null")
    to_driver = delivery(
        "to_driver",
        DeliveryTarget.DRIVER,
        numbered.c.event_url,
        bindparam("driver_partition_key", type_=Text()),
        numbered.c.event_url.is_not(None),
        numbered.c.event_url != "",
        every_type == "null",
    )
    callback_url = bindparam("callback_url", type_=Text())
    to_callback = delivery(
        "to_callback",
        DeliveryTarget.CALLBACK,
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


def _delivery_row(
    event_id: int,
    community_id: int,
    driver_id: int,
    seq: int,
    target: DeliveryTarget,
    url: str,
    now: datetime,
    trace_context: str | None,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "community_id": community_id,
        "driver_id": driver_id,
        "target": target.value,
        "url": url,
        "partition": partition_of(community_id, endpoint_of(target, url)),
        "seq": seq,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "trace_context": trace_context,
    }


async def record_event(
    session: AsyncSession,
    event: dict[str, Any],
    *,
    callback_url: str | None,
    wants: Any,
    now: datetime,
    trace_context: str | None = None,
) -> Recorded:
    """Number and store an event (``event`` holds its columns but ``seq``) with a delivery for
    its Driver, if ``wants(numbered)`` says the Driver's event URL should get it, and one for
    ``callback_url``. One statement on PostgreSQL (see :func:`_record_statement`; the Driver's
    delivery is a second one only under glob subscriptions), three on SQLite. Core statements on
    the session's connection: nothing here needs the session's identity map."""
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        return await _record_in_one(conn, event, callback_url, wants, now, trace_context)
    return await _record_in_three(conn, event, callback_url, wants, now, trace_context)


async def _record_in_one(
    conn: AsyncConnection,
    event: dict[str, Any],
    callback_url: str | None,
    wants: Any,
    now: datetime,
    trace_context: str | None,
) -> Recorded:
    community_id = event["community_id"]
    callback_partition = partition_of(community_id, callback_url) if callback_url else None
    params = {
        **event,
        "now": now,
        "callback_url": callback_url,
        "callback_partition": callback_partition,
        "driver_partition_key": partition_of(community_id, DRIVER_ENDPOINT),
        "trace_context": trace_context,
    }
    row = (await conn.execute(_RECORD, params)).one()
    made = []
    numbered = Numbered(row.seq, row.driver_id, row.subscribed_event_types, row.event_url)
    if row.driver_partition is not None:
        made.append(row.driver_partition)
    elif row.event_url and wants(numbered):
        driver = _delivery_row(
            row.id,
            community_id,
            row.driver_id,
            row.seq,
            DeliveryTarget.DRIVER,
            row.event_url,
            now,
            trace_context,
        )
        await conn.execute(_INSERT_DELIVERY, [driver])
        made.append(driver["partition"])
    if callback_partition is not None:
        made.append(callback_partition)
    return Recorded(row.id, row.seq, made)


async def _record_in_three(
    conn: AsyncConnection,
    event: dict[str, Any],
    callback_url: str | None,
    wants: Any,
    now: datetime,
    trace_context: str | None,
) -> Recorded:
    community_id = event["community_id"]
    row = (await conn.execute(_NUMBER, {"community_id": community_id})).one()
    numbered = Numbered(
        row.last_event_seq, row.driver_id, row.subscribed_event_types, row.event_url
    )
    values = {**event, "seq": numbered.seq, "created_at": now}
    event_id = (await conn.execute(_INSERT_EVENT, values)).scalar_one()
    targets: list[tuple[DeliveryTarget, str]] = []
    if numbered.event_url and wants(numbered):
        targets.append((DeliveryTarget.DRIVER, numbered.event_url))
    if callback_url:
        targets.append((DeliveryTarget.CALLBACK, callback_url))
    if not targets:
        return Recorded(event_id, numbered.seq, [])
    made = [
        _delivery_row(
            event_id,
            community_id,
            numbered.driver_id,
            numbered.seq,
            target,
            url,
            now,
            trace_context,
        )
        for target, url in targets
    ]
    await conn.execute(_INSERT_DELIVERY, made)
    return Recorded(event_id, numbered.seq, [d["partition"] for d in made])


async def list_events(
    session: AsyncSession,
    driver_id: int,
    *,
    community_id: int | None,
    after: int,
    limit: int,
) -> list[tuple[Event, str]]:
    """The Driver's events (with their community's slug) after ``after``, oldest first."""
    query = (
        select(Event, Community.slug)
        .join(Community, Community.id == Event.community_id)
        .where(Community.driver_id == driver_id, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    )
    if community_id is not None:
        query = query.where(Event.community_id == community_id)
    return [(event, slug) for event, slug in (await session.execute(query)).all()]


# --- claiming and recording delivery attempts -------------------------------------------------

_Head = aliased(Delivery)
# What an attempt needs besides the delivery itself: the event, its community's slug and the
# Driver's signing secrets.
_ATTEMPT = (
    Event.id.label("event_id"),
    Event.source,
    Event.event_type,
    Event.data,
    Event.initiator,
    Event.seq,
    Event.created_at,
    Community.slug,
    Driver.webhook_secret,
    Driver.previous_webhook_secret,
    Driver.previous_secret_expires_at,
)
_WITH_EVENT = (Event.id == Delivery.event_id, Community.id == Event.community_id)


def _claim_statement(head: ColumnElement[int], lease: str) -> Update:
    """Lease the delivery ``head`` names if it is due, not leased, and its endpoint is not
    disabled; the new lease is the bind parameter named ``lease``.

    One conditional UPDATE decides the race between workers: of two that see the same head, only
    one matches ``lease_until`` still free (PostgreSQL re-checks the conditions on the row it
    waited for; SQLite has one writer).
    """
    now = bindparam("now", type_=UTCDateTime())
    return (
        update(Delivery)
        .where(
            Delivery.id == head,
            Delivery.status == PENDING,
            Delivery.next_attempt_at <= now,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),
            Driver.id == Delivery.driver_id,
            or_(
                Delivery.target != DeliveryTarget.DRIVER.value,
                Driver.endpoint_disabled_at.is_(None),
            ),
        )
        .values(lease_until=bindparam(lease, type_=UTCDateTime()), attempts=Delivery.attempts + 1)
    )


def _head_of_partition(*, excluding: ColumnElement[int] | None = None) -> ColumnElement[int]:
    """The id of the oldest pending delivery of the partition bound as ``head_partition``, other
    than ``excluding``. The partition is a bound value, so PostgreSQL reads the head off the
    (partition, status, seq) index however long the partition's backlog."""
    head = select(_Head.id).where(
        _Head.partition == bindparam("head_partition"), _Head.status == PENDING
    )
    if excluding is not None:
        head = head.where(_Head.id != excluding)
    return head.order_by(_Head.seq).limit(1).scalar_subquery()


_CLAIM = _claim_statement(_head_of_partition(), "lease")
_CLAIM_FOR_ATTEMPT = _CLAIM.where(*_WITH_EVENT).returning(
    Delivery.id, Delivery.partition, Delivery.url, Delivery.trace_context, *_ATTEMPT
)
_CLAIM_ID = _CLAIM.returning(Delivery.id)
_ATTEMPT_OF = select(
    Delivery.id, Delivery.partition, Delivery.url, Delivery.trace_context, *_ATTEMPT
).where(Delivery.id == bindparam("id"), Driver.id == Delivery.driver_id, *_WITH_EVENT)
# Bind names must differ from the updated table's columns.
_HELD = (
    Delivery.id == bindparam("delivery_id"),
    Delivery.lease_until == bindparam("lease", type_=UTCDateTime()),
    Delivery.status == PENDING,
)
_SUCCEED = (
    update(Delivery)
    .where(*_HELD)
    .values(
        status=DeliveryStatus.SUCCEEDED.value,
        lease_until=None,
        last_status_code=bindparam("status_code"),
        last_error=None,
        delivered_at=bindparam("now", type_=UTCDateTime()),
    )
)
_HELD_ROW = select(Delivery).where(*_HELD)


def _succeed_and_claim_next() -> Select[Any]:
    """PostgreSQL: record a success and claim the partition's next head, in one statement.

    Both updates see the snapshot taken before either, where the delivery just done is still
    pending: the head is therefore looked for among the partition's other pending deliveries.
    When the success matches nothing (the lease ran out and another worker took over), neither
    does the claim, and the statement returns no row; otherwise one row, whose claim columns are
    null when there is no next head to claim. The claim is the same conditional UPDATE as
    :func:`claim_head`'s, so leases and order are decided the same way.
    """
    done = _SUCCEED.returning(Delivery.id).cte("done")
    head = _head_of_partition(excluding=bindparam("delivery_id"))
    claimed = (
        _claim_statement(head, "next_lease")
        .where(exists(select(done.c.id)), *_WITH_EVENT)
        .returning(Delivery.id, Delivery.partition, Delivery.url, Delivery.trace_context, *_ATTEMPT)
        .cte("claimed")
    )
    return select(done.c.id.label("done_id"), claimed).select_from(done.outerjoin(claimed, true()))


_SUCCEED_AND_CLAIM_NEXT = _succeed_and_claim_next()


async def claim_head(
    conn: AsyncConnection, partition: str, now: datetime, lease: datetime
) -> AttemptRow | None:
    """Lease the partition's oldest pending delivery if it is due and nobody holds it; the row
    holds everything the attempt needs. On PostgreSQL that is one statement; SQLite's RETURNING
    cannot name the other tables of an UPDATE … FROM, so there a second statement reads them."""
    params = {"head_partition": partition, "now": now, "lease": lease}
    if conn.dialect.name == "postgresql":
        return (await conn.execute(_CLAIM_FOR_ATTEMPT, params)).one_or_none()
    claimed = (await conn.execute(_CLAIM_ID, params)).scalar_one_or_none()
    return None if claimed is None else (await conn.execute(_ATTEMPT_OF, {"id": claimed})).one()


@dataclass(frozen=True)
class Success:
    """A success recorded (or not: the lease was lost), with the next head if one was claimed."""

    recorded: bool
    next: AttemptRow | None = None
    next_lease: datetime | None = None


async def record_success(
    conn: AsyncConnection,
    delivery_id: int,
    lease: datetime,
    status_code: int,
    now: datetime,
    *,
    next_lease: datetime | None,
    partition: str,
) -> Success:
    """Mark the held delivery succeeded; with ``next_lease``, on PostgreSQL, also claim the
    partition's next head in the same statement."""
    params = {"delivery_id": delivery_id, "lease": lease, "status_code": status_code, "now": now}
    if next_lease is not None and conn.dialect.name == "postgresql":
        params.update(next_lease=next_lease, head_partition=partition)
        row = (await conn.execute(_SUCCEED_AND_CLAIM_NEXT, params)).one_or_none()
        if row is None:
            return Success(recorded=False)
        return Success(True, None if row.id is None else row, next_lease)
    done = await conn.execute(_SUCCEED, params)
    return Success(recorded=done.rowcount == 1)


async def held_delivery(
    session: AsyncSession, delivery_id: int, lease: datetime
) -> Delivery | None:
    """The delivery if ``lease`` still holds it (locked until the transaction ends)."""
    found: Delivery | None = await session.scalar(
        _HELD_ROW.with_for_update(), {"delivery_id": delivery_id, "lease": lease}
    )
    return found


def add_failure(
    session: AsyncSession,
    delivery_id: int,
    now: datetime,
    status_code: int | None,
    error: str | None,
) -> None:
    """Keep one failed attempt of a delivery (what the console shows of a dead delivery)."""
    session.add(
        DeliveryFailure(
            delivery_id=delivery_id, attempted_at=now, status_code=status_code, error=error
        )
    )


async def failures_of(session: AsyncSession, delivery_id: int) -> list[DeliveryFailure]:
    found = await session.scalars(
        select(DeliveryFailure)
        .where(DeliveryFailure.delivery_id == delivery_id)
        .order_by(DeliveryFailure.id)
    )
    return list(found.all())


async def disable_endpoint(session: AsyncSession, driver_id: int, now: datetime) -> str:
    """Stop sending to the Driver's event URL; returns the Driver's name."""
    driver = await session.get_one(Driver, driver_id)
    driver.endpoint_disabled_at = now
    return driver.name


# --- backlog, listing, replay -----------------------------------------------------------------


async def due_partitions(session: AsyncSession, now: datetime) -> list[tuple[str, int, int]]:
    """Partitions with a pending delivery that is due and not leased: with their lowest seq and
    the most attempts made, which together tell a retry apart from the first try."""
    rows = await session.execute(
        select(Delivery.partition, func.min(Delivery.seq), func.max(Delivery.attempts))
        .where(
            Delivery.status == PENDING,
            Delivery.next_attempt_at <= now,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),
        )
        .group_by(Delivery.partition)
    )
    return [(partition, int(seq), int(attempts)) for partition, seq, attempts in rows.all()]


async def list_deliveries(
    session: AsyncSession,
    *,
    driver_id: int | None,
    status: str | None,
    limit: int,
) -> list[Delivery]:
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if driver_id is not None:
        query = query.where(Delivery.driver_id == driver_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    return list((await session.scalars(query)).all())


async def deliveries_to_replay(
    session: AsyncSession,
    *,
    driver_id: int | None,
    delivery_id: int | None,
    since: datetime | None,
) -> list[Delivery]:
    """One delivery by id, or every dead one (created since ``since``), in seq order."""
    query = select(Delivery)
    if driver_id is not None:
        query = query.where(Delivery.driver_id == driver_id)
    if delivery_id is not None:
        query = query.where(Delivery.id == delivery_id)
    else:
        query = query.where(Delivery.status == DeliveryStatus.DEAD.value)
        if since is not None:
            query = query.where(Delivery.created_at >= since)
    return list((await session.scalars(query.order_by(Delivery.seq))).all())


async def follow_event_url(session: AsyncSession, driver_id: int, url: str, now: datetime) -> None:
    """Point the Driver's pending deliveries at its new event URL, due now and with a fresh
    retry schedule (their failures were the old URL's). Their partitions, and so their order
    and their ``webhook-id``, stay as they were; an attempt in flight finishes where it went."""
    await session.execute(
        update(Delivery)
        .where(
            Delivery.driver_id == driver_id,
            Delivery.target == DeliveryTarget.DRIVER.value,
            Delivery.status == PENDING,
        )
        .values(url=url, next_attempt_at=now, attempts=0)
        .execution_options(synchronize_session=False)
    )


async def pending_partitions_of_driver(session: AsyncSession, driver_id: int) -> Sequence[str]:
    return (
        await session.scalars(
            select(Delivery.partition)
            .where(Delivery.driver_id == driver_id, Delivery.status == PENDING)
            .distinct()
        )
    ).all()


async def backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many deliveries are pending, and when the oldest was created."""
    pending, oldest = (
        await session.execute(
            select(func.count(), func.min(Delivery.created_at)).where(Delivery.status == PENDING)
        )
    ).one()
    return int(pending), oldest


async def counts_by_driver(session: AsyncSession) -> dict[int, dict[str, int]]:
    """Pending and dead deliveries per Driver (both targets), for ``metagov doctor``."""
    rows = await session.execute(
        select(Delivery.driver_id, Delivery.status, func.count())
        .where(
            Delivery.driver_id.is_not(None),
            Delivery.status.in_([PENDING, DeliveryStatus.DEAD.value]),
        )
        .group_by(Delivery.driver_id, Delivery.status)
    )
    found: dict[int, dict[str, int]] = {}
    for driver_id, status, count in rows.all():
        if driver_id is not None:
            found.setdefault(driver_id, {})[str(status)] = int(count)
    return found
