"""Delivering events to Drivers: signed, retried, in order, and never lost.

Each partition (one community's events to one endpoint) is a queue ordered by ``seq``. Only its
head is ever attempted, so a later event never arrives before an earlier one. An attempt first
*claims* the head with a lease (a conditional UPDATE, so of two workers only one wins); a worker
that dies mid-attempt leaves a lease that runs out, and the next sweep retries. Failed attempts
wait according to the retry schedule; after the last one the delivery is *dead*, the partition
moves on, and the dead delivery can be replayed.

On PostgreSQL a success and the claim of the partition's next head are one statement, so a
partition with a backlog costs one round trip per delivery besides its POST.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Update,
    bindparam,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from metagov import metrics, signing
from metagov.db.base import UTCDateTime, utcnow
from metagov.db.engine import single_statement
from metagov.db.models import Community, Delivery, Driver, Event
from metagov.errors import NotFound
from metagov.jobs.queue import Job, ring_after_commit, send_doorbells, unit_of_work
from metagov.runtime import Runtime
from metagov.services.events import PENDING, deliver_job, envelope

log = logging.getLogger(__name__)

# A new delivery is PENDING (events.py records them); then SUCCEEDED or DEAD.
SUCCEEDED, DEAD = "succeeded", "dead"
_jitter = random.Random()  # noqa: S311 (spreads retries; not security-sensitive)


@dataclass(frozen=True)
class Claim:
    """One delivery attempt this worker holds the lease for."""

    delivery_id: int
    partition: str
    lease: datetime
    url: str
    body: bytes
    msg_id: str
    secrets: list[str]


@dataclass(frozen=True)
class Result:
    """What became of an attempt: whether it was delivered, and the partition's next head if it
    was claimed along with the success (on PostgreSQL, when the caller asked for it)."""

    delivered: bool
    next: Claim | None = None


_NOT_DELIVERED = Result(delivered=False)


def _decrypt_secret(runtime: Runtime, ciphertext: str) -> str:
    """Decrypt a signing secret once per process: a Fernet decryption per delivery adds up."""
    found = runtime.signing_secret_cache.get(ciphertext)
    if found is None:
        found = runtime.secrets.decrypt_text(ciphertext)
        runtime.signing_secret_cache.put(ciphertext, found)
    return found


def signing_secrets(
    runtime: Runtime,
    current: str | None,
    previous: str | None,
    previous_expires_at: datetime | None,
    now: datetime,
) -> list[str]:
    """The Driver's current secret, plus the previous one while the rotation overlap lasts."""
    found = []
    if current:
        found.append(_decrypt_secret(runtime, current))
    if previous and previous_expires_at and previous_expires_at > now:
        found.append(_decrypt_secret(runtime, previous))
    return found


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
            or_(Delivery.target != "driver", Driver.endpoint_disabled_at.is_(None)),
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


# The statements of every delivery, built once: building one costs more than running it.
_CLAIM = _claim_statement(_head_of_partition(), "lease")
_CLAIM_FOR_ATTEMPT = _CLAIM.where(*_WITH_EVENT).returning(
    Delivery.id, Delivery.partition, Delivery.url, *_ATTEMPT
)
_CLAIM_ID = _CLAIM.returning(Delivery.id)
_ATTEMPT_OF = select(Delivery.id, Delivery.partition, Delivery.url, *_ATTEMPT).where(
    Delivery.id == bindparam("id"), Driver.id == Delivery.driver_id, *_WITH_EVENT
)
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
        status=SUCCEEDED,
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
        .returning(Delivery.id, Delivery.partition, Delivery.url, *_ATTEMPT)
        .cte("claimed")
    )
    return select(done.c.id.label("done_id"), claimed).select_from(done.outerjoin(claimed, true()))


_SUCCEED_AND_CLAIM_NEXT = _succeed_and_claim_next()


async def claim_head(runtime: Runtime, partition: str, now: datetime | None = None) -> Claim | None:
    """Lease the partition's oldest pending delivery if it is due and nobody holds it.

    On PostgreSQL the claim returns everything the attempt needs in the same statement. SQLite's
    RETURNING cannot name the other tables of an UPDATE … FROM, so there a second statement reads
    them.
    """
    now = now or utcnow()
    lease = now + timedelta(seconds=runtime.settings.delivery_lease_seconds)
    params = {"head_partition": partition, "now": now, "lease": lease}
    async with single_statement(runtime.engine) as conn:
        if conn.dialect.name == "postgresql":
            row = (await conn.execute(_CLAIM_FOR_ATTEMPT, params)).one_or_none()
        else:
            claimed = (await conn.execute(_CLAIM_ID, params)).scalar_one_or_none()
            row = (
                None
                if claimed is None
                else (await conn.execute(_ATTEMPT_OF, {"id": claimed})).one()
            )
    return None if row is None else _claim_of(runtime, row, lease, now)


def _claim_of(runtime: Runtime, row: Row[Any], lease: datetime, now: datetime) -> Claim:
    """The attempt a claiming statement's returned row describes."""
    event = Event(
        id=row.event_id,
        source=row.source,
        event_type=row.event_type,
        data=row.data,
        initiator=row.initiator,
        seq=row.seq,
        created_at=row.created_at,
    )
    return Claim(
        delivery_id=row.id,
        partition=row.partition,
        lease=lease,
        url=row.url,
        body=json.dumps(envelope(event, row.slug), separators=(",", ":")).encode(),
        msg_id=f"evt_{event.id}",
        secrets=signing_secrets(
            runtime,
            row.webhook_secret,
            row.previous_webhook_secret,
            row.previous_secret_expires_at,
            now,
        ),
    )


async def attempt(runtime: Runtime, claim: Claim, *, claim_next: bool = False) -> Result:
    """POST one claimed delivery and record the result; with ``claim_next``, a success may also
    claim the partition's next head for the caller to attempt."""
    headers = {
        "Content-Type": "application/json",
        **signing.standard_headers(claim.secrets, claim.msg_id, claim.body),
    }
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None
    metrics.DELIVERIES_ATTEMPTED.inc()
    try:
        response = await runtime.http.post(
            claim.url,
            content=claim.body,
            headers=headers,
            timeout=runtime.settings.delivery_timeout_seconds,
        )
        status = response.status_code
        retry_after = _retry_after(response.headers.get("retry-after"))
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
    # A failed attempt is worth a line at INFO; a delivered one is in the database already.
    log.log(
        logging.INFO if error else logging.DEBUG,
        "delivery attempt",
        extra={"delivery_id": claim.delivery_id, "webhook_id": claim.msg_id, "status": status},
    )
    return await record_result(runtime, claim, status, error, retry_after, claim_next=claim_next)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


async def record_result(
    runtime: Runtime,
    claim: Claim,
    status: int | None,
    error: str | None,
    retry_after: float | None,
    *,
    claim_next: bool = False,
) -> Result:
    if status is not None and 200 <= status < 300:
        return await _record_success(runtime, claim, status, claim_next=claim_next)
    await _record_failure(runtime, claim, status, error, retry_after)
    return _NOT_DELIVERED


async def _record_success(
    runtime: Runtime, claim: Claim, status: int, *, claim_next: bool
) -> Result:
    """Mark the held delivery succeeded; with ``claim_next`` on PostgreSQL, claim the partition's
    next head in the same statement."""
    now = utcnow()
    params = {"delivery_id": claim.delivery_id, "lease": claim.lease, "status_code": status}
    async with single_statement(runtime.engine) as conn:
        if claim_next and conn.dialect.name == "postgresql":
            lease = now + timedelta(seconds=runtime.settings.delivery_lease_seconds)
            params.update(now=now, next_lease=lease, head_partition=claim.partition)
            row = (await conn.execute(_SUCCEED_AND_CLAIM_NEXT, params)).one_or_none()
            if row is None:  # our lease ran out and another worker took over
                return _NOT_DELIVERED
            metrics.DELIVERIES_SUCCEEDED.inc()
            nxt = None if row.id is None else _claim_of(runtime, row, lease, now)
            return Result(delivered=True, next=nxt)
        done = await conn.execute(_SUCCEED, {**params, "now": now})
    if done.rowcount != 1:  # our lease ran out and another worker took over
        return _NOT_DELIVERED
    metrics.DELIVERIES_SUCCEEDED.inc()
    return Result(delivered=True)


async def _record_failure(
    runtime: Runtime,
    claim: Claim,
    status: int | None,
    error: str | None,
    retry_after: float | None,
) -> None:
    """Release the held delivery and schedule its retry, or declare it dead, or (410) stop
    sending to its endpoint."""
    settings = runtime.settings
    now = utcnow()
    held = {"delivery_id": claim.delivery_id, "lease": claim.lease}
    async with unit_of_work(runtime) as session:
        delivery = await session.scalar(_HELD_ROW, held)
        if delivery is None:
            return
        delivery.lease_until = None
        delivery.last_status_code = status
        metrics.DELIVERIES_FAILED.inc()
        delivery.last_error = error
        if status == 410:
            await _gone(session, delivery, now)
            return
        schedule = settings.delivery_retry_schedule
        if delivery.attempts > len(schedule):
            delivery.status = DEAD
            metrics.DELIVERIES_DEAD.inc()
            log.warning("delivery is dead", extra={"delivery_id": delivery.id})
            return
        delay = schedule[delivery.attempts - 1] * _jitter.uniform(0.8, 1.2)
        if status in (429, 503) and retry_after is not None:
            delay = min(retry_after, settings.retry_after_cap_seconds)
        delivery.next_attempt_at = now + timedelta(seconds=delay)


async def _gone(session: AsyncSession, delivery: Delivery, now: datetime) -> None:
    """410 Gone: stop sending to this endpoint. A Driver's endpoint is disabled until re-enabled
    (its deliveries wait, none is lost); a callback URL's delivery is dead."""
    if delivery.target == "driver" and delivery.driver_id is not None:
        driver = await session.get_one(Driver, delivery.driver_id)
        driver.endpoint_disabled_at = now
        delivery.attempts -= 1
        log.warning("driver endpoint answered 410 and is disabled", extra={"driver": driver.name})
    else:
        delivery.status = DEAD
        metrics.DELIVERIES_DEAD.inc()


async def deliver_partition(runtime: Runtime, partition: str, *, limit: int = 100) -> int:
    """Deliver the partition's due deliveries in order until one fails; returns how many.

    On PostgreSQL each success but the ``limit``-th claims the next head along with it. When that
    finds none, a claim of its own still follows: the success's statement cannot see an event
    committed while it ran, and the job that committed such an event, finding the head still
    leased to us, left it to us (see :func:`deliver_rung`).
    """
    delivered = 0
    claim = await claim_head(runtime, partition)
    while claim is not None:
        more = delivered + 1 < limit
        result = await attempt(runtime, claim, claim_next=more)
        if not result.delivered:
            return delivered
        delivered += 1
        if not more:
            # Long backlog: hand the rest to a fresh job so other partitions get their turn.
            key = f"deliver:{partition}:more"
            await runtime.queue.enqueue(Job.of("deliver", partition, key=key))
            return delivered
        claim = result.next or await claim_head(runtime, partition)
    return delivered


async def deliver_rung(runtime: Runtime, rung: Iterable[Job]) -> None:
    """Deliver the partitions a committed transaction rang for, from the job that committed it.

    This saves a job per event and its wait in the queue. A partition another job is already
    delivering is left to it: that job claims the next head after recording its own, and so
    finds the new event. Should the delivery fail unexpectedly, the doorbell goes out after all.
    """
    for job in rung:
        try:
            await deliver_partition(runtime, str(job.args[0]))
        except Exception:
            log.exception("delivery failed; ringing for another job", extra={"job": job.key})
            await send_doorbells(runtime, [job])


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
    driver: Driver | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if driver is not None:
        query = query.where(Delivery.driver_id == driver.id)
    if status is not None:
        query = query.where(Delivery.status == status)
    return list((await session.scalars(query)).all())


async def replay(
    session: AsyncSession,
    *,
    driver: Driver | None = None,
    delivery_id: int | None = None,
    since: datetime | None = None,
) -> list[Delivery]:
    """Send dead (or delivered) deliveries again, with their original ``webhook-id``.

    Either one delivery by id, or every dead delivery created since ``since``.
    """
    query = select(Delivery)
    if driver is not None:
        query = query.where(Delivery.driver_id == driver.id)
    if delivery_id is not None:
        query = query.where(Delivery.id == delivery_id)
    else:
        query = query.where(Delivery.status == DEAD)
        if since is not None:
            query = query.where(Delivery.created_at >= since)
    found = list((await session.scalars(query.order_by(Delivery.seq))).all())
    if delivery_id is not None and not found:
        raise NotFound(f"no delivery {delivery_id}")
    now = utcnow()
    for delivery in found:
        delivery.status = PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.lease_until = None
        delivery.last_error = None
        ring_after_commit(session, deliver_job(delivery.partition, delivery.seq))
    await session.flush()
    return found


async def enable_endpoint(session: AsyncSession, driver: Driver) -> None:
    """Re-enable a Driver endpoint disabled by a 410; its waiting deliveries go out again."""
    driver.endpoint_disabled_at = None
    partitions = await session.scalars(
        select(Delivery.partition)
        .where(Delivery.driver_id == driver.id, Delivery.status == PENDING)
        .distinct()
    )
    for partition in partitions:
        ring_after_commit(session, Job.of("deliver", partition, key=f"deliver:{partition}:on"))
    await session.flush()
