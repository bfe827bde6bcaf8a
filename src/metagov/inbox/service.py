"""Receiving webhooks, on the request path: verify, store once, acknowledge.

Nothing here calls a platform: the plugin's ``verify_webhook`` checks the signature over the raw
bytes, the webhook is inserted into the inbox (a redelivery with the same delivery id inserts
nothing) in one autocommitted statement, and only then does the platform get its answer. The job
that follows (:mod:`metagov.inbox.handlers`) runs the plugin's receiver and the processes' hooks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from metagov import metrics, tracing
from metagov.db.base import utcnow
from metagov.db.engine import Session
from metagov.db.models import InboundWebhook, InboxStatus
from metagov.errors import Conflict, NotFound, ServiceUnavailable, Unauthorized
from metagov.inbox import repository
from metagov.inbox.repository import Target, instance_sender, tenant_sender
from metagov.instances.service import choose_instance, load_config
from metagov.jobs.queue import Job, ring_after_commit, send_doorbells
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import (
    WebhookAccepted,
    WebhookRejected,
    WebhookReply,
    WebhookRequest,
    WebhookScope,
)
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

# Headers worth keeping with a stored webhook: the platform's own, not proxies' or cookies.
_DROP_HEADERS = frozenset({"authorization", "cookie", "forwarded", "x-forwarded-for", "x-real-ip"})
ACK = WebhookReply(body={"ok": True})
# A cached target is tried once; then the targets are read afresh up to this many times.
_FRESH_LOOKS = 2


def handle_job(sender: str, inbox_id: int) -> Job:
    """The doorbell for a stored webhook: a job that handles its sender's waiting webhooks. The
    key names the webhook, so a doorbell rung while the sender's job is finishing is not lost."""
    return Job.of("handle_webhook", sender, key=f"handle_webhook:{sender}:{inbox_id}")


def request_headers(raw: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in raw.items()}


async def receive(
    runtime: Runtime,
    plugin: str,
    request: WebhookRequest,
    *,
    community_slug: str | None = None,
) -> WebhookReply:
    """Verify and store one webhook; returns what to answer the platform.

    This is the busiest route, so it stays lean: Core statements built once, the plugin's config
    from the per-process cache, and the doorbell after the commit. A webhook for an instance
    usually costs one statement: the instance comes from memory and the insert checks it is
    still current.
    """
    spec = runtime.registry.get(plugin)
    scope = WebhookScope.INSTANCE if community_slug is not None else WebhookScope.PLATFORM
    if spec.webhooks is not scope:
        raise NotFound(f"plugin {plugin!r} takes no webhooks at this URL")
    with tracing.span("webhook.receive", attributes={"metagov.plugin": plugin}):
        if community_slug is not None:
            accepted, stored = await _receive_for_instance(runtime, spec, community_slug, request)
        else:
            accepted, stored = await _receive_for_platform(runtime, spec, request)
        if stored is not None:
            tracing.set_attribute("metagov.inbox_id", stored[1])
            await send_doorbells(runtime.queue, [handle_job(*stored)])
    return accepted.reply or ACK


async def _receive_for_instance(
    runtime: Runtime, spec: PluginSpec, slug: str, request: WebhookRequest
) -> tuple[WebhookAccepted, tuple[str, int] | None]:
    """Verify with the instance's config and store; the stored webhook's sender and id, or None
    for a redelivery (or a reply that stores nothing).

    The targets of ``(slug, plugin)`` are kept in memory. Whatever a stale copy could get wrong
    (an unknown instance, a rejected signature, a refused insert) is tried again with targets
    read afresh, so a change of config, secret or instances is seen by the next webhook.
    """
    key = (slug, spec.name)
    cache = runtime.caches.webhook_targets
    targets: tuple[Target, ...] | None = cache.get(key)
    fresh = targets is None
    for _ in range(_FRESH_LOOKS + 1):
        if targets is None:
            targets = await _load_targets(runtime, spec, slug)
            cache.put(key, targets)
        try:
            target = choose_instance(
                targets,
                slug,
                spec.name,
                request.query.get("community_platform_id"),
                anonymous=True,
            )
            config = load_config(runtime, spec, target)
            accepted = await spec.plugin.verify_webhook(request, config)
        except WebhookRejected as exc:
            if fresh:
                raise _rejected(spec, exc) from None
            targets, fresh = None, True  # counted and logged only if fresh targets agree
            continue
        except (NotFound, Conflict):
            if fresh:
                raise
            targets, fresh = None, True
            continue
        if not accepted.store:
            return accepted, None
        sender = instance_sender(target.id)
        values = _values(spec, request, accepted, f"i{target.id}")
        values.update(
            sender_key=sender,
            instance_id=target.id,
            config_version=target.config_version,
            slug=slug,
            instances=len(targets),
        )
        try:
            async with runtime.db.statement() as conn:
                inserted = await repository.insert_for_instance(conn, values)
        except repository.TargetGone:
            targets, fresh = None, True  # disabled while the statement ran: look again
            continue
        if inserted is not None:
            metrics.WEBHOOKS_RECEIVED.labels(spec.name).inc()
            return accepted, (sender, inserted)
        # Nothing stored: a redelivery, or the targets changed since they were read.
        current = await _load_targets(runtime, spec, slug)
        cache.put(key, current)
        if current == targets:
            metrics.WEBHOOKS_RECEIVED.labels(spec.name).inc()
            return accepted, None
        targets, fresh = current, True
    raise ServiceUnavailable(
        f"plugin {spec.name!r} in community {slug!r} is being reconfigured; retry",
        code="plugin_changing",
    )


async def _load_targets(runtime: Runtime, spec: PluginSpec, slug: str) -> tuple[Target, ...]:
    """The community's instances of the plugin; 404 if the community does not exist."""
    async with runtime.db.engine.connect() as conn:
        found = await repository.load_targets(conn, slug, spec.name)
    if found is None:
        raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return found


def _rejected(spec: PluginSpec, exc: WebhookRejected) -> Unauthorized:
    """Count and log a rejected webhook; the error to answer with."""
    metrics.WEBHOOKS_REJECTED.labels(spec.name, exc.reason).inc()
    log.info("webhook rejected", extra={"plugin": spec.name, "reason": exc.reason})
    return Unauthorized(f"webhook rejected: {exc.reason}", code="webhook_rejected")


def _values(
    spec: PluginSpec, request: WebhookRequest, accepted: WebhookAccepted, scope: str
) -> dict[str, Any]:
    """The stored webhook's own values. Its dedupe key is the platform's delivery id (or the
    body's hash) within its sender: a redelivery stores nothing. Query parameters the plugin
    declared secret (URL tokens) are not kept."""
    delivery = accepted.delivery_id or "sha256:" + hashlib.sha256(request.body).hexdigest()
    return {
        "dedupe": f"{scope}:{delivery}"[:300],
        "platform_id": accepted.community_platform_id,
        "request_headers": {k: v for k, v in request.headers.items() if k not in _DROP_HEADERS},
        "request_query": {
            k: v for k, v in request.query.items() if k not in spec.plugin.webhook_secret_params
        },
        "request_body": request.body,
        "now": utcnow(),
        # The receiving span's context, which the job that handles the webhook continues.
        "trace_context": tracing.current_traceparent(),
    }


async def _receive_for_platform(
    runtime: Runtime, spec: PluginSpec, request: WebhookRequest
) -> tuple[WebhookAccepted, tuple[str, int] | None]:
    """A platform-wide app's webhook: verified with the app's settings, stored for the tenant
    (the platform's team, organisation…) it names if any instance serves it."""
    try:
        accepted = await spec.plugin.verify_webhook(request, None)
    except WebhookRejected as exc:
        raise _rejected(spec, exc) from None
    if not accepted.store:
        return accepted, None
    platform_id = accepted.community_platform_id
    async with runtime.db.statement() as conn:
        if platform_id is None or not await repository.tenant_exists(conn, spec.name, platform_id):
            metrics.WEBHOOKS_REJECTED.labels(spec.name, "unknown_tenant").inc()
            log.info("webhook for a tenant with no instance ignored", extra={"plugin": spec.name})
            return accepted, None
        own = _values(spec, request, accepted, f"p{platform_id}")
        sender = tenant_sender(spec.name, platform_id)
        inserted = await repository.insert_for_tenant(
            conn,
            {
                "plugin_name": spec.name,
                "dedupe_key": own["dedupe"],
                "community_id": None,
                "plugin_instance_id": None,
                "community_platform_id": platform_id,
                "sender": sender,
                "headers": own["request_headers"],
                "query": own["request_query"],
                "body": request.body,
                "status": repository.PENDING,
                "attempts": 0,
                "next_attempt_at": own["now"],
                "received_at": own["now"],
                "trace_context": own["trace_context"],
            },
        )
    metrics.WEBHOOKS_RECEIVED.labels(spec.name).inc()
    return accepted, None if inserted is None else (sender, inserted)


async def pending_count(session: Session) -> int:
    return await repository.pending_count(session)


async def retry(session: Session, inbox_id: int) -> InboundWebhook:
    """Handle a stored webhook again now: a failed one gets a fresh count of attempts, one still
    waiting for its retry is tried at once. Its sender's doorbell rings after the commit."""
    row = await repository.webhook_for_retry(session, inbox_id)
    if row is None:
        raise NotFound(f"no stored webhook {inbox_id}")
    if row.status == InboxStatus.HANDLED:
        raise Conflict(f"webhook {inbox_id} is already handled", code="already_handled")
    if row.status == InboxStatus.FAILED:
        row.status = InboxStatus.PENDING
        row.attempts = 0
        row.lease_until = None
    row.next_attempt_at = utcnow()
    await session.flush()
    ring_after_commit(session, handle_job(row.sender, row.id))
    return row
