"""Events for Drivers: recording them with their deliveries (the outbox), reading them back,
subscriptions, and the operator's side of deliveries (listing, replaying, re-enabling).

An event and its deliveries are written in the same transaction as the change that caused it, so
a Driver hears about exactly the changes that were committed. Each community numbers its events
(``seq``) under a row lock on the community, so numbers follow commit order and deliveries keep
that order. The doorbell for each delivery rings after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from metagov import tracing
from metagov.db.base import utcnow
from metagov.db.engine import Session
from metagov.db.models import (
    Community,
    Delivery,
    DeliveryFailure,
    DeliveryStatus,
    Driver,
    Event,
    Process,
)
from metagov.errors import NotFound
from metagov.jobs.queue import Job, ring_after_commit
from metagov.outbox import repository
from metagov.processes.schemas import process_record

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


def deliver_job(partition: str, seq: int) -> Job:
    # The key names the head's seq, so each new event rings once and a later one is not
    # swallowed by a job that is already finishing.
    return Job.of("deliver", partition, key=f"deliver:{partition}:{seq}")


def subscribed(patterns: Sequence[str] | None, event_type: str) -> bool:
    return patterns is None or any(fnmatchcase(event_type, p) for p in patterns)


async def record_event(
    session: Session,
    community_id: int,
    *,
    source: str,
    event_type: str,
    data: dict[str, Any],
    initiator: dict[str, Any] | None = None,
    process_id: int | None = None,
    callback_url: str | None = None,
) -> int:
    """Store an event and a delivery for each endpoint that should receive it (the Driver's event
    URL if it subscribes to the type, and ``callback_url``); returns the event's id."""
    event_type = _storable(event_type)
    event = {
        "community_id": community_id,
        "source": source,
        "event_type": event_type,
        "data": _storable(data),
        "initiator": _storable(initiator),
        "process_id": process_id,
    }
    recorded = await repository.record_event(
        session,
        event,
        callback_url=callback_url or None,
        wants=lambda numbered: subscribed(numbered.subscribed_event_types, event_type),
        now=utcnow(),
        trace_context=tracing.current_traceparent(),
    )
    log.debug(
        "event recorded",
        extra={
            "event_id": recorded.event_id,
            "community_id": community_id,
            "event_type": event_type,
            "process_id": process_id,
        },
    )
    for partition in recorded.partitions:
        ring_after_commit(session, deliver_job(partition, recorded.seq))
    return recorded.event_id


async def record_process_event(session: Session, community_slug: str, process: Process) -> int:
    """Tell the Driver (and the process's callback URL) that a process changed.

    The type says what happened: ``process.completed``, ``process.failed``,
    ``process.cancelled``, or ``process.updated`` when only the outcome changed.
    """
    status = process.status if process.status in ("completed", "failed", "cancelled") else "updated"
    return await record_event(
        session,
        process.community_id,
        source=process.plugin_name,
        event_type=f"process.{status}",
        data=process_record(process, community_slug),
        process_id=process.id,
        callback_url=process.callback_url,
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
    session: Session,
    driver: Driver,
    *,
    community: Community | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The Driver's events with an id greater than ``after``, oldest first."""
    rows = await repository.list_events(
        session,
        driver.id,
        community_id=community.id if community is not None else None,
        after=after,
        limit=limit,
    )
    return [{"event_id": event.id, **envelope(event, slug)} for event, slug in rows]


async def set_subscriptions(
    session: Session, community: Community, patterns: list[str] | None
) -> None:
    """Choose the event types of ``community`` its Driver's event URL receives (None: all)."""
    community = await session.merge(community)
    community.subscribed_event_types = patterns
    await session.flush()


async def list_deliveries(
    session: Session,
    *,
    driver: Driver | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    return await repository.list_deliveries(
        session, driver_id=driver.id if driver else None, status=status, limit=limit
    )


async def replay(
    session: Session,
    *,
    driver: Driver | None = None,
    delivery_id: int | None = None,
    since: datetime | None = None,
) -> list[Delivery]:
    """Send dead (or delivered) deliveries again, with their original ``webhook-id``.

    Either one delivery by id, or every dead delivery created since ``since``.
    """
    found = await repository.deliveries_to_replay(
        session,
        driver_id=driver.id if driver else None,
        delivery_id=delivery_id,
        since=since,
    )
    if delivery_id is not None and not found:
        raise NotFound(f"no delivery {delivery_id}")
    now = utcnow()
    for delivery in found:
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.lease_until = None
        delivery.last_error = None
        ring_after_commit(session, deliver_job(delivery.partition, delivery.seq))
    await session.flush()
    return found


async def follow_event_url(session: Session, driver: Driver) -> None:
    """After the Driver's event URL changed: its pending deliveries go to the new URL, at once
    and in their order (see :func:`repository.follow_event_url`)."""
    if driver.event_url:
        await repository.follow_event_url(session, driver.id, driver.event_url, utcnow())
    await enable_endpoint(session, driver)


async def enable_endpoint(session: Session, driver: Driver) -> None:
    """Re-enable a Driver endpoint disabled by a 410; its waiting deliveries go out again."""
    driver.endpoint_disabled_at = None
    for partition in await repository.pending_partitions_of_driver(session, driver.id):
        ring_after_commit(session, Job.of("deliver", partition, key=f"deliver:{partition}:on"))
    await session.flush()


async def disable_endpoint(session: Session, driver: Driver) -> None:
    """Stop sending to the Driver's event URL, as a 410 would; its new deliveries wait (none is
    lost) until :func:`enable_endpoint`."""
    if driver.endpoint_disabled_at is None:
        await repository.disable_endpoint(session, driver.id, utcnow())
        await session.flush()


async def failures(session: Session, delivery_id: int) -> list[DeliveryFailure]:
    """A delivery's failed attempts, oldest first."""
    return await repository.failures_of(session, delivery_id)


async def backlog(session: Session) -> tuple[int, datetime | None]:
    """How many deliveries are pending, and when the oldest of them was created."""
    return await repository.backlog(session)


async def counts_by_driver(session: Session) -> dict[int, dict[str, int]]:
    """Pending and dead deliveries of each Driver, by Driver id and status."""
    return await repository.counts_by_driver(session)
