"""Handling stored webhooks (the ``handle_webhook`` job): the plugin's receiver, then the hooks
of the processes each webhook concerns, then the events they recorded delivered.

A sender's webhooks (one instance's, or one platform tenant's) are handled one at a time, in the
order they arrived: a job leases the sender's oldest waiting webhook, handles it, and moves on
to the next; a job that finds the oldest leased leaves the sender to the job holding it. So a
sender's events reach the Driver in the order its webhooks did, whichever jobs ran. A webhook
whose handler failed waits for its retry without holding the others back.

Handling one webhook is *call, then commit*: the plugin's ``receive_webhook`` and each process's
hook run on snapshots with no transaction open (each process leased meanwhile); then one short
transaction marks the webhook handled and saves everything they recorded. If any hook fails,
nothing is saved, the leases are given back and the webhook is retried later, whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from metagov import tracing
from metagov.db.base import utcnow
from metagov.db.models import InboxStatus, PluginInstance
from metagov.inbox import repository
from metagov.inbox.repository import Claimed
from metagov.inbox.service import handle_job
from metagov.instances.service import build_context, call_plugin, save_effects
from metagov.jobs.queue import take_doorbells
from metagov.outbox.handlers import deliver_rung
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import PluginContext, WebhookRequest
from metagov.processes import repository as processes_repository
from metagov.processes import service as processes
from metagov.retry import Backoff
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

# How long a webhook whose handler failed waits before it is tried again.
RETRY = Backoff.exponential(10.0, cap=3600.0)


class LeaseLost(Exception):
    """The webhook's lease ran out while it was handled and another job took it over."""


async def handle_sender(runtime: Runtime, sender: str, *, limit: int = 100) -> int:
    """Handle the sender's waiting webhooks in order, until none is due, one fails, or another
    job holds the oldest; returns how many were handled. After ``limit``, the rest is left to a
    fresh job so other senders get their turn."""
    handled = 0
    while handled < limit:
        now = utcnow()
        lease = now + timedelta(seconds=runtime.settings.inbox_lease_seconds)
        async with runtime.db.statement_session() as session:
            claimed = await repository.claim_head(session, sender, now, lease)
        if claimed is None:
            return handled
        if not await _handle(runtime, claimed):
            return handled
        handled += 1
    await runtime.queue.enqueue(handle_job(sender, 0))
    return handled


async def handle(runtime: Runtime, inbox_id: int) -> bool:
    """Handle the sender of stored webhook ``inbox_id`` (its older waiting webhooks first);
    returns whether this call handled ``inbox_id`` (False if it was handled already)."""
    async with runtime.db.snapshot() as session:
        sender = await repository.sender_of(session, inbox_id)
        status = await repository.status_of(session, inbox_id)
    if sender is None or status != InboxStatus.PENDING:
        return False
    await handle_sender(runtime, sender)
    async with runtime.db.snapshot() as session:
        return await repository.status_of(session, inbox_id) == InboxStatus.HANDLED


async def _handle(runtime: Runtime, claimed: Claimed) -> bool:
    """Run everything one webhook calls for, then save it all at once; False if it failed. The
    work continues the trace of the request that stored the webhook."""
    attributes = {"metagov.plugin": claimed.plugin_name, "metagov.inbox_id": claimed.id}
    with tracing.span("webhook.handle", parent=claimed.trace_context, attributes=attributes):
        return await _handle_in_span(runtime, claimed)


async def _handle_in_span(runtime: Runtime, claimed: Claimed) -> bool:
    spec = runtime.registry.get(claimed.plugin_name)
    request = WebhookRequest(headers=claimed.headers, body=claimed.body, query=claimed.query)
    held: list[processes.Held] = []
    try:
        targets = claimed.instances
        if targets is None:
            async with runtime.db.snapshot() as session:
                targets = await repository.instances_for(session, claimed)
        calls: list[tuple[PluginInstance, PluginContext[Any]]] = []
        runs: list[processes.Ran] = []
        for instance, slug in targets:
            ctx = await _receive(runtime, spec, slug, instance, request)
            calls.append((instance, ctx))
            if ctx.disable_reason is None:
                runs.extend(await _process_hooks(runtime, spec, instance, request, held))
        async with runtime.unit_of_work() as session:
            if not await repository.mark_handled(session, claimed.id, claimed.lease, utcnow()):
                raise LeaseLost
            for instance, ctx in calls:
                await save_effects(session, runtime, instance, ctx)
            for ran in runs:
                await processes.apply(session, runtime, ran)
            rung = take_doorbells(session, "deliver")
    except Exception as exc:
        for process in held:
            await processes.release(runtime, process.process.id, process.version)
        if isinstance(exc, LeaseLost):
            log.warning("webhook taken over by another job", extra={"inbox_id": claimed.id})
        else:
            log.exception("webhook handler failed", extra={"inbox_id": claimed.id})
            await _record_failure(runtime, claimed, exc)
        return False
    await deliver_rung(runtime, rung)
    return True


async def _receive(
    runtime: Runtime, spec: PluginSpec, slug: str, instance: PluginInstance, webhook: WebhookRequest
) -> PluginContext[Any]:
    """Run the plugin's ``receive_webhook`` for one instance; returns what it recorded."""
    ctx = build_context(runtime, spec, slug, instance)
    await call_plugin(spec, ctx, lambda: spec.plugin.receive_webhook(ctx, webhook))
    return ctx


async def _process_hooks(
    runtime: Runtime,
    spec: PluginSpec,
    instance: PluginInstance,
    request: WebhookRequest,
    held: list[processes.Held],
) -> Sequence[processes.Ran]:
    """Run ``receive_webhook`` of each pending process of ``instance`` the webhook concerns (as
    the plugin's ``webhook_keys`` map it), each leased; ``held`` collects the leases."""
    if not spec.processes:
        return []
    keys = spec.plugin.webhook_keys(request)
    if keys is not None and not keys:
        return []
    async with runtime.db.snapshot() as session:
        ids = await processes_repository.pending_for_webhook(session, instance.id, keys)
    runs = []
    for process_id in ids:
        found = await processes.hold(runtime, process_id, wait=True)
        if found is None:
            continue  # it ended meanwhile
        held.append(found)
        runs.append(await processes.run_hook(runtime, found, "webhook", webhook=request))
    return runs


async def _record_failure(runtime: Runtime, claimed: Claimed, exc: Exception) -> None:
    """Note the failure on the webhook and release it for a retry, or give it up."""
    async with runtime.unit_of_work() as session:
        row = await repository.held_webhook(session, claimed.id, claimed.lease)
        if row is None:
            return
        row.lease_until = None
        row.attempts += 1
        row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if row.attempts >= runtime.settings.inbox_max_attempts:
            row.status = InboxStatus.FAILED
            log.error(
                "webhook given up after %s attempts", row.attempts, extra={"inbox_id": row.id}
            )
        else:
            row.next_attempt_at = utcnow() + timedelta(seconds=RETRY.delay(row.attempts))


async def due_senders(runtime: Runtime, now: datetime, *, limit: int) -> list[tuple[str, int]]:
    async with runtime.db.snapshot() as session:
        return await repository.due_senders(session, now, limit=limit)
