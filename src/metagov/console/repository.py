"""Every statement of the operator console: its own rows (operators, their sessions, the audit
log) and the read model behind its pages, which looks across Drivers, communities, deliveries,
the inbox and processes at once. Changes to those go through their own services; only reads are
here. Bucketing times for the plots is the one place that knows SQLite from PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    case,
    cast,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.models import (
    AuditEntry,
    Community,
    Delivery,
    DeliveryStatus,
    Driver,
    Event,
    InboundWebhook,
    InboxStatus,
    Operator,
    OperatorSession,
    PluginInstance,
    Process,
    TaskSchedule,
)

PENDING = DeliveryStatus.PENDING.value
SUCCEEDED = DeliveryStatus.SUCCEEDED.value
DEAD = DeliveryStatus.DEAD.value
# How many recent deliveries the latency percentiles are computed from.
LATENCY_SAMPLE = 20_000


# --- operators and sessions -------------------------------------------------------------------


async def operator_named(session: AsyncSession, name: str) -> Operator | None:
    found: Operator | None = await session.scalar(select(Operator).where(Operator.name == name))
    return found


async def operators(session: AsyncSession) -> Sequence[Operator]:
    return (await session.scalars(select(Operator).order_by(Operator.name))).all()


async def add(session: AsyncSession, row: Operator | OperatorSession | AuditEntry) -> None:
    session.add(row)
    await session.flush()


async def remove_operator(session: AsyncSession, operator: Operator) -> None:
    await session.delete(operator)
    await session.flush()


async def session_with_operator(
    session: AsyncSession, session_id: str, now: datetime
) -> tuple[OperatorSession, Operator] | None:
    """The unexpired session ``session_id`` and its operator."""
    row = (
        await session.execute(
            select(OperatorSession, Operator)
            .join(Operator, Operator.id == OperatorSession.operator_id)
            .where(OperatorSession.id == session_id, OperatorSession.expires_at > now)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def delete_session(session: AsyncSession, session_id: str) -> None:
    await session.execute(delete(OperatorSession).where(OperatorSession.id == session_id))


async def delete_expired_sessions(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(OperatorSession).where(OperatorSession.expires_at <= now))


async def delete_sessions_of(session: AsyncSession, operator_id: int) -> None:
    await session.execute(delete(OperatorSession).where(OperatorSession.operator_id == operator_id))


# --- audit log --------------------------------------------------------------------------------


async def audit_entries(session: AsyncSession, *, limit: int, offset: int) -> Sequence[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    return (await session.scalars(query)).all()


# --- the overview -----------------------------------------------------------------------------


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _bucket(column: Any, dialect: str, start: int, width: int) -> ColumnElement[Any]:
    """Which ``width``-second bucket after the epoch second ``start`` a time falls in."""
    if dialect == "postgresql":
        seconds = func.extract("epoch", column)
        return cast(func.floor((seconds - start) / width), Integer)
    # SQLite keeps UTC times as text; strftime('%s') reads them as epoch seconds.
    return (cast(func.strftime("%s", column), Integer) - start) / width


async def event_counts(
    session: AsyncSession, since: datetime, start: int, width: int
) -> list[tuple[int, int, int]]:
    """(driver id, bucket, events recorded) since ``since``."""
    bucket = _bucket(Event.created_at, _dialect(session), start, width).label("bucket")
    rows = await session.execute(
        select(Community.driver_id, bucket, func.count())
        .select_from(Event)
        .join(Community, Community.id == Event.community_id)
        .where(Event.created_at >= since)
        .group_by(Community.driver_id, bucket)
    )
    return [(int(d), int(b), int(n)) for d, b, n in rows.all() if d is not None]


async def delivered_counts(
    session: AsyncSession, since: datetime, start: int, width: int
) -> list[tuple[int, int, int]]:
    """(driver id, bucket, deliveries that succeeded) since ``since``."""
    bucket = _bucket(Delivery.delivered_at, _dialect(session), start, width).label("bucket")
    rows = await session.execute(
        select(Delivery.driver_id, bucket, func.count())
        .where(
            Delivery.status == SUCCEEDED,
            Delivery.delivered_at >= since,
            Delivery.driver_id.is_not(None),
        )
        .group_by(Delivery.driver_id, bucket)
    )
    return [(int(d), int(b), int(n)) for d, b, n in rows.all() if d is not None]


async def latencies(session: AsyncSession, since: datetime) -> list[tuple[int, float]]:
    """(driver id, seconds from event to delivery) of the most recent deliveries since
    ``since``: percentiles need the values, and SQLite has no percentile function."""
    rows = await session.execute(
        select(Delivery.driver_id, Delivery.created_at, Delivery.delivered_at)
        .where(
            Delivery.status == SUCCEEDED,
            Delivery.delivered_at >= since,
            Delivery.driver_id.is_not(None),
        )
        .order_by(Delivery.id.desc())
        .limit(LATENCY_SAMPLE)
    )
    return [
        (int(driver), (delivered - created).total_seconds())
        for driver, created, delivered in rows.all()
        if driver is not None and delivered is not None
    ]


async def delivery_states(session: AsyncSession) -> list[tuple[int, str, bool, int]]:
    """(driver id, status, failing, count) of the deliveries not delivered: pending ones (failing
    when an attempt failed already) and dead ones."""
    failing = case((Delivery.attempts > 0, 1), else_=0).label("failing")
    rows = await session.execute(
        select(Delivery.driver_id, Delivery.status, failing, func.count())
        .where(Delivery.status.in_((PENDING, DEAD)), Delivery.driver_id.is_not(None))
        .group_by(Delivery.driver_id, Delivery.status, failing)
    )
    return [(int(d), str(s), bool(f), int(n)) for d, s, f, n in rows.all() if d is not None]


async def inbox_counts(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(plugin, status, count) of the stored webhooks not handled."""
    rows = await session.execute(
        select(InboundWebhook.plugin_name, InboundWebhook.status, func.count())
        .where(InboundWebhook.status.in_((InboxStatus.PENDING.value, InboxStatus.FAILED.value)))
        .group_by(InboundWebhook.plugin_name, InboundWebhook.status)
    )
    return [(str(p), str(s), int(n)) for p, s, n in rows.all()]


# --- drivers ----------------------------------------------------------------------------------


async def community_counts(session: AsyncSession) -> dict[int, int]:
    rows = await session.execute(
        select(Community.driver_id, func.count()).group_by(Community.driver_id)
    )
    return {int(d): int(n) for d, n in rows.all()}


async def driver_by_id(session: AsyncSession, driver_id: int) -> Driver | None:
    return await session.get(Driver, driver_id)


# --- communities ------------------------------------------------------------------------------


async def communities(
    session: AsyncSession, *, search: str | None, limit: int, offset: int
) -> list[tuple[Community, str, int]]:
    """Communities (with their Driver's name and how many plugin instances they have) whose
    slug or name contains ``search``, newest first."""
    instances = (
        select(func.count())
        .where(PluginInstance.community_id == Community.id)
        .correlate(Community)
        .scalar_subquery()
    )
    query = (
        select(Community, Driver.name, instances)
        .join(Driver, Driver.id == Community.driver_id)
        .order_by(Community.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if search:
        needle = search.lower()
        query = query.where(
            or_(
                func.lower(Community.slug).contains(needle, autoescape=True),
                func.lower(Community.readable_name).contains(needle, autoescape=True),
            )
        )
    return [(c, str(d), int(n)) for c, d, n in (await session.execute(query)).all()]


async def community_named(session: AsyncSession, slug: str) -> tuple[Community, str] | None:
    row = (
        await session.execute(
            select(Community, Driver.name)
            .join(Driver, Driver.id == Community.driver_id)
            .where(Community.slug == slug)
        )
    ).one_or_none()
    return None if row is None else (row[0], str(row[1]))


async def last_webhooks(session: AsyncSession, instance_ids: Sequence[int]) -> dict[int, datetime]:
    rows = await session.execute(
        select(InboundWebhook.plugin_instance_id, func.max(InboundWebhook.received_at))
        .where(InboundWebhook.plugin_instance_id.in_(instance_ids))
        .group_by(InboundWebhook.plugin_instance_id)
    )
    return {int(i): when for i, when in rows.all() if i is not None}


async def last_errors(
    session: AsyncSession, instance_ids: Sequence[int]
) -> dict[int, tuple[datetime, str]]:
    """The latest error of each instance: a webhook its handler failed, or a periodic task."""
    found: dict[int, tuple[datetime, str]] = {}
    webhooks = await session.execute(
        select(
            InboundWebhook.plugin_instance_id,
            InboundWebhook.received_at,
            InboundWebhook.last_error,
        )
        .where(
            InboundWebhook.plugin_instance_id.in_(instance_ids),
            InboundWebhook.last_error.is_not(None),
        )
        .order_by(InboundWebhook.id.desc())
        .limit(500)
    )
    for instance_id, when, error in webhooks.all():
        if instance_id is not None:
            found.setdefault(instance_id, (when, f"webhook: {error}"))
    tasks = await session.execute(
        select(TaskSchedule.plugin_instance_id, TaskSchedule.task_name, TaskSchedule.last_error)
        .where(
            TaskSchedule.plugin_instance_id.in_(instance_ids),
            TaskSchedule.last_error.is_not(None),
        )
        .order_by(TaskSchedule.plugin_instance_id)
    )
    for instance_id, task, error in tasks.all():
        if int(instance_id) not in found:
            found[int(instance_id)] = (datetime.min, f"task {task}: {error}")
    return found


async def recent_events(session: AsyncSession, community_id: int, *, limit: int) -> Sequence[Event]:
    query = (
        select(Event).where(Event.community_id == community_id).order_by(Event.id.desc())
    ).limit(limit)
    return (await session.scalars(query)).all()


# --- deliveries -------------------------------------------------------------------------------


def _delivery_filter(status: str | None) -> list[ColumnElement[bool]]:
    if status == "failing":
        return [Delivery.status == PENDING, Delivery.attempts > 0]
    if status in (PENDING, SUCCEEDED, DEAD):
        return [Delivery.status == status]
    return []


async def deliveries(
    session: AsyncSession,
    *,
    driver_id: int | None,
    community: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> list[Any]:
    """Deliveries (newest first) with their event's type, community and Driver."""
    query = (
        select(Delivery, Event.event_type, Community.slug, Driver.name.label("driver"))
        .join(Event, Event.id == Delivery.event_id)
        .join(Community, Community.id == Delivery.community_id)
        .outerjoin(Driver, Driver.id == Delivery.driver_id)
        .where(*_delivery_filter(status))
        .order_by(Delivery.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if driver_id is not None:
        query = query.where(Delivery.driver_id == driver_id)
    if community:
        query = query.where(Community.slug == community)
    return list((await session.execute(query)).all())


async def delivery(session: AsyncSession, delivery_id: int) -> Any:
    """The delivery with its event, community slug and Driver name, or None."""
    return (
        await session.execute(
            select(Delivery, Event, Community.slug, Driver.name.label("driver"))
            .join(Event, Event.id == Delivery.event_id)
            .join(Community, Community.id == Delivery.community_id)
            .outerjoin(Driver, Driver.id == Delivery.driver_id)
            .where(Delivery.id == delivery_id)
        )
    ).one_or_none()


# --- inbox ------------------------------------------------------------------------------------


async def troubled_webhooks(session: AsyncSession, *, limit: int) -> list[Any]:
    """Stored webhooks whose handling failed: given up, or waiting for a retry. The body is not
    read: the console shows what went wrong, not what the platform sent."""
    rows = await session.execute(
        select(
            InboundWebhook.id,
            InboundWebhook.plugin_name,
            InboundWebhook.status,
            InboundWebhook.attempts,
            InboundWebhook.last_error,
            InboundWebhook.received_at,
            InboundWebhook.next_attempt_at,
            Community.slug,
        )
        .outerjoin(Community, Community.id == InboundWebhook.community_id)
        .where(
            or_(
                InboundWebhook.status == InboxStatus.FAILED.value,
                (InboundWebhook.status == InboxStatus.PENDING.value)
                & InboundWebhook.last_error.is_not(None),
            )
        )
        .order_by(InboundWebhook.id.desc())
        .limit(limit)
    )
    return list(rows.all())


# --- processes --------------------------------------------------------------------------------


async def processes(
    session: AsyncSession,
    *,
    status: str | None,
    plugin: str | None,
    limit: int,
    offset: int,
) -> list[tuple[Process, str]]:
    query = (
        select(Process, Community.slug)
        .join(Community, Community.id == Process.community_id)
        .order_by(Process.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if status:
        query = query.where(Process.status == status)
    if plugin:
        query = query.where(Process.plugin_name == plugin)
    return [(p, str(slug)) for p, slug in (await session.execute(query)).all()]


async def process_plugins(session: AsyncSession) -> list[str]:
    found = await session.scalars(select(Process.plugin_name).distinct())
    return sorted(found.all())


async def process_with_community(
    session: AsyncSession, process_id: int
) -> tuple[Process, Community] | None:
    row = (
        await session.execute(
            select(Process, Community)
            .join(Community, Community.id == Process.community_id)
            .where(Process.id == process_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])
