"""Inbound webhooks: verify, store once, acknowledge; then hand them to the plugin in a job.

On the request path nothing calls a platform: the plugin's ``verify_webhook`` checks the
signature over the raw bytes, the webhook is inserted into the inbox (a redelivery with the same
delivery id inserts nothing), the transaction commits, and only then does the platform get its
2xx. The job that follows runs the plugin's receiver and the open processes' ``receive_webhook``;
if it fails, the inbox row records the error and the sweep retries it later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ScalarSelect, and_, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from metagov import metrics
from metagov.db.base import utcnow
from metagov.db.models import Community, InboundWebhook, PluginInstance, Process
from metagov.errors import NotFound, Unauthorized
from metagov.jobs.queue import Job, ring_after_commit, take_doorbells, unit_of_work
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import (
    WebhookAccepted,
    WebhookRejected,
    WebhookReply,
    WebhookRequest,
    WebhookScope,
)
from metagov.runtime import Runtime
from metagov.services import deliveries, lifecycle
from metagov.services import plugins as plugin_service
from metagov.services import processes as process_service

log = logging.getLogger(__name__)

PENDING, HANDLED, FAILED = "pending", "handled", "failed"
# Headers worth keeping with a stored webhook: the platform's own, not proxies' or cookies.
_DROP_HEADERS = frozenset({"authorization", "cookie", "forwarded", "x-forwarded-for", "x-real-ip"})
ACK = WebhookReply(body={"ok": True})


def handle_job(inbox_id: int) -> Job:
    return Job.of("handle_webhook", inbox_id)


async def receive(
    session: AsyncSession,
    runtime: Runtime,
    plugin: str,
    request: WebhookRequest,
    *,
    community_slug: str | None = None,
) -> WebhookReply:
    """Verify and store one webhook; returns what to answer the platform."""
    spec = runtime.registry.get(plugin)
    scope = WebhookScope.INSTANCE if community_slug is not None else WebhookScope.PLATFORM
    if spec.webhooks is not scope:
        raise NotFound(f"plugin {plugin!r} takes no webhooks at this URL")
    instance: PluginInstance | None = None
    config = None
    if community_slug is not None:
        community = await session.scalar(select(Community).where(Community.slug == community_slug))
        if community is None:
            raise NotFound(f"community {community_slug!r} not found", code="unknown_community")
        instance = await plugin_service.resolve_instance(
            session, community, plugin, request.query.get("community_platform_id")
        )
        config = plugin_service.load_config(runtime, spec, instance)
    try:
        accepted = await spec.plugin.verify_webhook(request, config)
    except WebhookRejected as exc:
        metrics.WEBHOOKS_REJECTED.labels(plugin, exc.reason).inc()
        log.info("webhook rejected", extra={"plugin": plugin, "reason": exc.reason})
        raise Unauthorized(f"webhook rejected: {exc.reason}", code="webhook_rejected") from None
    if not accepted.store:
        return accepted.reply or ACK
    await _store(session, spec, request, accepted, instance)
    return accepted.reply or ACK


async def _store(
    session: AsyncSession,
    spec: PluginSpec,
    request: WebhookRequest,
    accepted: WebhookAccepted,
    instance: PluginInstance | None,
) -> None:
    scope = f"i{instance.id}" if instance is not None else f"p{accepted.community_platform_id}"
    delivery = accepted.delivery_id or "sha256:" + hashlib.sha256(request.body).hexdigest()
    if instance is None and not await _has_instances(session, spec.name, accepted):
        metrics.WEBHOOKS_REJECTED.labels(spec.name, "unknown_tenant").inc()
        log.info("webhook for a tenant with no instance ignored", extra={"plugin": spec.name})
        return
    values: dict[str, Any] = {
        "plugin_name": spec.name,
        "dedupe_key": f"{scope}:{delivery}"[:300],
        "community_id": instance.community_id if instance is not None else None,
        "plugin_instance_id": instance.id if instance is not None else None,
        "community_platform_id": accepted.community_platform_id,
        "headers": {k: v for k, v in request.headers.items() if k not in _DROP_HEADERS},
        "body": request.body,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": utcnow(),
        "received_at": utcnow(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inserted = await session.scalar(
        dialect.insert(InboundWebhook)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["plugin_name", "dedupe_key"])
        .returning(InboundWebhook.id)
    )
    metrics.WEBHOOKS_RECEIVED.labels(spec.name).inc()
    if inserted is not None:
        ring_after_commit(session, handle_job(inserted))


async def _has_instances(session: AsyncSession, plugin: str, accepted: WebhookAccepted) -> bool:
    if accepted.community_platform_id is None:
        return False
    found = await session.scalar(
        select(PluginInstance.id)
        .where(
            PluginInstance.name == plugin,
            PluginInstance.community_platform_id == accepted.community_platform_id,
        )
        .limit(1)
    )
    return found is not None


@dataclass(frozen=True)
class _OlderFirst:
    """An older webhook of the same sender is due: it must be handled first."""

    inbox_id: int


async def handle(runtime: Runtime, inbox_id: int) -> bool:
    """Handle one stored webhook, after any older one of the same sender still waiting.

    Webhooks of one plugin instance (or platform tenant) become events in the order they arrived,
    so their events reach the Driver in that order too, however the jobs were scheduled. An older
    webhook whose handler failed and is waiting for its retry does not hold the others back.
    Idempotent: a webhook already handled is skipped. Returns whether ``inbox_id`` was handled now.
    """
    current = inbox_id
    while True:
        outcome = await _handle_one(runtime, current)
        if isinstance(outcome, _OlderFirst):
            current = outcome.inbox_id
        elif current == inbox_id:
            return outcome
        else:
            current = inbox_id


async def _handle_one(runtime: Runtime, inbox_id: int) -> bool | _OlderFirst:
    """Run the plugin's receiver and the open processes' hooks for one stored webhook, unless an
    older webhook of the same sender is due (then say which), then deliver the events recorded.

    The row lock and the look for an older webhook are one statement.
    """
    try:
        async with unit_of_work(runtime) as session:
            # Wait for (not skip) a row another job is handling: it then is no longer pending.
            now = utcnow()
            found = (
                await session.execute(
                    select(InboundWebhook, _oldest_due_before(now))
                    .where(
                        InboundWebhook.id == inbox_id,
                        InboundWebhook.status == PENDING,
                        InboundWebhook.next_attempt_at <= now,
                    )
                    .with_for_update(of=InboundWebhook)
                )
            ).one_or_none()
            if found is None:
                return False
            row, older = found
            if older is not None:
                return _OlderFirst(older)
            spec = runtime.registry.get(row.plugin_name)
            request = WebhookRequest(headers=row.headers, body=row.body)
            for instance, community in await _instances(session, row):
                await _dispatch(session, runtime, spec, instance, community, request)
            row.status = HANDLED
            row.handled_at = utcnow()
            row.last_error = None
            rung = take_doorbells(session, "deliver")
    except Exception as exc:
        log.exception("webhook handler failed", extra={"inbox_id": inbox_id})
        await _record_failure(runtime, inbox_id, exc)
        return False
    await deliveries.deliver_rung(runtime, rung)
    return True


def _oldest_due_before(now: datetime) -> ScalarSelect[int | None]:
    """The oldest due pending webhook of the same sender as the row selected, older than it."""
    older = aliased(InboundWebhook)
    same_sender = or_(
        and_(
            InboundWebhook.plugin_instance_id.is_not(None),
            older.plugin_instance_id == InboundWebhook.plugin_instance_id,
        ),
        and_(
            InboundWebhook.plugin_instance_id.is_(None),
            older.community_platform_id.is_not_distinct_from(InboundWebhook.community_platform_id),
        ),
    )
    return (
        select(func.min(older.id))
        .where(
            older.plugin_name == InboundWebhook.plugin_name,
            same_sender,
            older.status == PENDING,
            older.next_attempt_at <= now,
            older.id < InboundWebhook.id,
        )
        .scalar_subquery()
    )


async def _instances(
    session: AsyncSession, row: InboundWebhook
) -> list[tuple[PluginInstance, Community]]:
    """The instances a webhook is for, each with its community (one statement)."""
    query = select(PluginInstance, Community).join(
        Community, Community.id == PluginInstance.community_id
    )
    if row.plugin_instance_id is not None:
        query = query.where(PluginInstance.id == row.plugin_instance_id)
    else:
        query = query.where(
            PluginInstance.name == row.plugin_name,
            PluginInstance.community_platform_id == row.community_platform_id,
        ).order_by(PluginInstance.id)
    return [(instance, community) for instance, community in await session.execute(query)]


async def _dispatch(
    session: AsyncSession,
    runtime: Runtime,
    spec: PluginSpec,
    instance: PluginInstance,
    community: Community,
    request: WebhookRequest,
) -> None:
    ctx = plugin_service.build_context(runtime, spec, community, instance)
    await spec.plugin.receive_webhook(ctx, request)
    if await plugin_service.save_effects(session, instance, ctx):
        return  # the platform revoked us: the instance and its processes are gone
    if not spec.processes:
        return  # a plugin with no process type has no process to tell
    open_processes = await session.scalars(
        select(Process)
        .where(
            Process.plugin_instance_id == instance.id,
            Process.status == lifecycle.ProcessStatus.PENDING.value,
        )
        .order_by(Process.id)
        .with_for_update()
    )
    for process in open_processes:
        await process_service.receive_webhook(session, runtime, community, process, request)


async def _record_failure(runtime: Runtime, inbox_id: int, exc: Exception) -> None:
    async with unit_of_work(runtime) as session:
        row = await session.get(InboundWebhook, inbox_id)
        if row is None or row.status != PENDING:
            return
        row.attempts += 1
        row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if row.attempts >= runtime.settings.inbox_max_attempts:
            row.status = FAILED
            log.error(
                "webhook given up after %s attempts", row.attempts, extra={"inbox_id": row.id}
            )
        else:
            row.next_attempt_at = utcnow() + timedelta(seconds=min(3600, 5 * 2**row.attempts))


def request_headers(raw: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in raw.items()}
