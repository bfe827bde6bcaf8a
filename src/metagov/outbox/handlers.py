"""Delivering events to Drivers: signed, retried, in order, and never lost (the ``deliver`` job).

Each partition (one community's events to one endpoint) is a queue ordered by ``seq``. Only its
head is ever attempted, so a later event never arrives before an earlier one. An attempt first
*claims* the head with a lease (one conditional UPDATE, so of two workers only one wins), then
POSTs with no transaction open, then records the result in one short statement: a worker that dies
mid-attempt leaves a lease that runs out, and the next sweep retries. Failed attempts wait
according to the retry schedule; after the last one the delivery is *dead*, the partition moves
on, and the dead delivery can be replayed.

On PostgreSQL a success and the claim of the partition's next head are one statement, so a
partition with a backlog costs one round trip per delivery besides its POST.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from metagov import metrics, outbound, signing, tracing
from metagov.db.base import utcnow
from metagov.db.models import DeliveryStatus, DeliveryTarget, Event
from metagov.jobs.queue import Job, send_doorbells
from metagov.outbox import repository
from metagov.outbox.service import envelope
from metagov.retry import Backoff, retry_after
from metagov.runtime import Runtime

log = logging.getLogger(__name__)


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
    # The context of the work that recorded the event; each attempt is a span in its trace.
    trace_context: str | None = None


@dataclass(frozen=True)
class Result:
    """What became of an attempt: whether it was delivered, and the partition's next head if it
    was claimed along with the success (on PostgreSQL, when the caller asked for it)."""

    delivered: bool
    next: Claim | None = None


_NOT_DELIVERED = Result(delivered=False)


def _decrypt_secret(runtime: Runtime, ciphertext: str) -> str:
    """Decrypt a signing secret once per process: a Fernet decryption per delivery adds up."""
    cache = runtime.caches.signing_secrets
    found = cache.get(ciphertext)
    if found is None:
        found = runtime.secrets.decrypt_text(ciphertext)
        cache.put(ciphertext, found)
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


def _lease(runtime: Runtime, now: datetime) -> datetime:
    return now + timedelta(seconds=runtime.settings.delivery_lease_seconds)


async def claim_head(runtime: Runtime, partition: str, now: datetime | None = None) -> Claim | None:
    """Lease the partition's oldest pending delivery if it is due and nobody holds it."""
    now = now or utcnow()
    lease = _lease(runtime, now)
    async with runtime.db.statement() as conn:
        row = await repository.claim_head(conn, partition, now, lease)
    return None if row is None else _claim_of(runtime, row, lease, now)


def _claim_of(
    runtime: Runtime, row: repository.AttemptRow, lease: datetime, now: datetime
) -> Claim:
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
        trace_context=row.trace_context,
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
    attributes = {"metagov.delivery_id": claim.delivery_id, "metagov.webhook_id": claim.msg_id}
    with tracing.span("delivery.attempt", parent=claim.trace_context, attributes=attributes):
        return await _attempt(runtime, claim, claim_next=claim_next)


async def _attempt(runtime: Runtime, claim: Claim, *, claim_next: bool) -> Result:
    headers = {
        "Content-Type": "application/json",
        **signing.standard_headers(claim.secrets, claim.msg_id, claim.body),
    }
    status: int | None = None
    wait: float | None = None
    error: str | None = None
    metrics.DELIVERIES_ATTEMPTED.inc()
    try:
        response = await runtime.outbound.post(
            claim.url,
            content=claim.body,
            headers=headers,
            timeout=runtime.settings.delivery_timeout_seconds,
        )
        status = response.status_code
        wait = retry_after(response.headers.get("retry-after"))
        if not 200 <= status < 300:
            error = f"HTTP {status}"  # the status only: the Driver's body is not kept
    except httpx.HTTPError as exc:
        # A short code, never the socket's words: the Driver reads ``last_error``, and refused
        # or failed connections must not tell it what the gateway's network looks like.
        error = outbound.error_code(exc)
    # A failed attempt is worth a line at INFO; a delivered one is in the database already.
    log.log(
        logging.INFO if error else logging.DEBUG,
        "delivery attempt",
        extra={
            "delivery_id": claim.delivery_id,
            "webhook_id": claim.msg_id,
            "status": status,
            "error": error,
        },
    )
    return await record_result(runtime, claim, status, error, wait, claim_next=claim_next)


async def record_result(
    runtime: Runtime,
    claim: Claim,
    status: int | None,
    error: str | None,
    wait: float | None,
    *,
    claim_next: bool = False,
) -> Result:
    if status is not None and 200 <= status < 300:
        return await _record_success(runtime, claim, status, claim_next=claim_next)
    await _record_failure(runtime, claim, status, error, wait)
    return _NOT_DELIVERED


async def _record_success(
    runtime: Runtime, claim: Claim, status: int, *, claim_next: bool
) -> Result:
    now = utcnow()
    async with runtime.db.statement() as conn:
        done = await repository.record_success(
            conn,
            claim.delivery_id,
            claim.lease,
            status,
            now,
            next_lease=_lease(runtime, now) if claim_next else None,
            partition=claim.partition,
        )
    if not done.recorded:  # our lease ran out and another worker took over
        return _NOT_DELIVERED
    metrics.DELIVERIES_SUCCEEDED.inc()
    if done.next is None or done.next_lease is None:
        return Result(delivered=True)
    return Result(delivered=True, next=_claim_of(runtime, done.next, done.next_lease, now))


def delivery_backoff(runtime: Runtime) -> Backoff:
    return Backoff.schedule(runtime.settings.delivery_retry_schedule, jitter=0.2)


async def _record_failure(
    runtime: Runtime,
    claim: Claim,
    status: int | None,
    error: str | None,
    wait: float | None,
) -> None:
    """Release the held delivery and schedule its retry, or declare it dead, or (410) stop
    sending to its endpoint."""
    settings = runtime.settings
    now = utcnow()
    async with runtime.unit_of_work() as session:
        delivery = await repository.held_delivery(session, claim.delivery_id, claim.lease)
        if delivery is None:
            return
        delivery.lease_until = None
        delivery.last_status_code = status
        delivery.last_error = error
        repository.add_failure(session, delivery.id, now, status, error)
        metrics.DELIVERIES_FAILED.inc()
        if status == 410:
            # Gone: a Driver's endpoint is disabled until re-enabled (its deliveries wait, none
            # is lost); a callback URL's delivery is dead.
            if delivery.target == DeliveryTarget.DRIVER and delivery.driver_id is not None:
                name = await repository.disable_endpoint(session, delivery.driver_id, now)
                delivery.attempts -= 1
                log.warning("driver endpoint answered 410 and is disabled", extra={"driver": name})
            else:
                delivery.status = DeliveryStatus.DEAD
                metrics.DELIVERIES_DEAD.inc()
            return
        backoff = delivery_backoff(runtime)
        if backoff.gives_up(delivery.attempts):
            delivery.status = DeliveryStatus.DEAD
            metrics.DELIVERIES_DEAD.inc()
            log.warning("delivery is dead", extra={"delivery_id": delivery.id})
            return
        delay = backoff.delay(delivery.attempts)
        if status in (429, 503) and wait is not None:
            delay = min(wait, settings.retry_after_cap_seconds)
        delivery.next_attempt_at = now + timedelta(seconds=delay)


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
            await send_doorbells(runtime.queue, [job])
