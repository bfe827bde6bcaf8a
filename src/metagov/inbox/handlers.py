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
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from metagov import tracing
from metagov.db.base import utcnow
from metagov.db.models import InboxStatus, PluginInstance
from metagov.inbox import repository
from metagov.inbox.repository import Claimed
from metagov.inbox.service import handle_job
from metagov.instances.service import build_context, call_plugin, record_emitted, save_effects
from metagov.jobs.queue import take_doorbells
from metagov.outbox.handlers import deliver_rung
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import EmittedEvent, PluginContext, WebhookRequest
from metagov.processes import repository as processes_repository
from metagov.processes import service as processes
from metagov.retry import Backoff
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

# How long a webhook whose handler failed waits before it is tried again.
RETRY = Backoff.exponential(10.0, cap=3600.0)


class LeaseLost(Exception):
    """The webhook's lease ran out while it was handled and another job took it over."""


# How many of a sender's waiting webhooks one claim takes: handled in order, those that concern no
# process together, with one transaction for all of them.
BATCH = 50
Target = tuple[PluginInstance, str]


async def handle_sender(runtime: Runtime, sender: str, *, limit: int = 500) -> int:
    """Handle the sender's waiting webhooks in order, until none is due, one fails, or another
    job holds the oldest; returns how many were handled. After ``limit``, the rest is left to a
    fresh job so other senders get their turn."""
    handled = 0
    while handled < limit:
        now = utcnow()
        lease = now + timedelta(seconds=runtime.settings.inbox_lease_seconds)
        async with runtime.db.statement() as conn:
            claimed = await repository.claim_oldest(
                conn, sender, now, lease, batch=min(BATCH, limit - handled)
            )
        if not claimed:
            return handled
        done = await _handle_claimed(runtime, claimed)
        handled += done
        if done < len(claimed):
            return handled
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


async def _handle_claimed(runtime: Runtime, claimed: list[Claimed]) -> int:
    """Handle a sender's claimed webhooks in order; returns how many were handled. Runs of
    webhooks that concern no process are handled together; a webhook for processes alone. After
    a failure the rest are released, for the next job."""
    spec = runtime.registry.get(claimed[0].plugin_name)
    async with runtime.db.snapshot() as session:
        targets = await repository.instances_for(session, claimed[0])
    done = 0
    run: list[tuple[Claimed, WebhookRequest]] = []
    for item in claimed:
        request = WebhookRequest(headers=item.headers, body=item.body, query=item.query)
        if not _concerns_processes(spec, request):
            run.append((item, request))
            continue
        ok = not run or await _handle_together(runtime, spec, targets, run)
        done += len(run) if ok else 0
        run = []
        if not ok or not await _handle(runtime, spec, targets, item, request):
            break
        done += 1
    else:
        if run and await _handle_together(runtime, spec, targets, run):
            done += len(run)
    rest = [item.id for item in claimed[done:]]  # a failed one's lease is already given back
    if rest:
        async with runtime.unit_of_work() as session:
            await repository.release(session, rest, claimed[0].lease)
    return done


# What one webhook of a batch emitted, per instance, with the ``traceparent`` of the span that
# handled it: the events are recorded (and later delivered) as that span's children.
Emitted = tuple[str | None, list[tuple[PluginInstance, list[EmittedEvent]]]]


def _concerns_processes(spec: PluginSpec, request: WebhookRequest) -> bool:
    if not spec.processes:
        return False
    keys = spec.plugin.webhook_keys(request)
    return keys is None or bool(keys)


async def _handle_together(
    runtime: Runtime,
    spec: PluginSpec,
    targets: Sequence[Target],
    run: Sequence[tuple[Claimed, WebhookRequest]],
) -> bool:
    """The plugin's receiver for each webhook of ``run``, in order, each instance's calls sharing
    one context (so each sees the state the one before left); then one transaction marks them
    all handled and saves what they did. False if one failed: its failure is recorded, and
    nothing of the others is saved (they are handled again later).

    Each webhook's calls, and the recording of the events they emitted, continue the trace of
    the request that stored that webhook."""
    calls = [(instance, build_context(runtime, spec, slug, instance)) for instance, slug in targets]
    emitted: list[Emitted] = []
    for item, request in run:
        mine: list[tuple[PluginInstance, list[EmittedEvent]]] = []
        handled_in: str | None = None
        try:
            with tracing.span(
                "webhook.handle", parent=item.trace_context, attributes=_traced(item)
            ):
                handled_in = tracing.current_traceparent()
                for instance, ctx in calls:
                    if ctx.disable_reason is None:
                        await call_plugin(spec, ctx, _receiver(spec, ctx, request))
                        mine.append((instance, list(ctx.emitted)))
                        ctx.emitted.clear()
        except Exception as exc:
            log.exception("webhook handler failed", extra={"inbox_id": item.id})
            await _record_failure(runtime, item, exc)
            return False
        emitted.append((handled_in, mine))
    return await _save(runtime, [item for item, _ in run], calls, [], emitted)


async def _handle(
    runtime: Runtime,
    spec: PluginSpec,
    targets: Sequence[Target],
    claimed: Claimed,
    request: WebhookRequest,
) -> bool:
    """Run everything one webhook calls for, processes included, then save it all at once;
    False if it failed. The work continues the trace of the request that stored the webhook."""
    with tracing.span("webhook.handle", parent=claimed.trace_context, attributes=_traced(claimed)):
        return await _handle_in_span(runtime, spec, targets, claimed, request)


def _traced(claimed: Claimed) -> dict[str, str | int]:
    return {"metagov.plugin": claimed.plugin_name, "metagov.inbox_id": claimed.id}


async def _handle_in_span(
    runtime: Runtime,
    spec: PluginSpec,
    targets: Sequence[Target],
    claimed: Claimed,
    request: WebhookRequest,
) -> bool:
    held: list[processes.Held] = []
    try:
        calls: list[tuple[PluginInstance, PluginContext[Any]]] = []
        runs: list[processes.Ran] = []
        for instance, slug in targets:
            ctx = build_context(runtime, spec, slug, instance)
            await call_plugin(spec, ctx, _receiver(spec, ctx, request))
            calls.append((instance, ctx))
            if ctx.disable_reason is None:
                runs.extend(await _process_hooks(runtime, spec, instance, request, held))
    except Exception as exc:
        await _release_processes(runtime, held)
        log.exception("webhook handler failed", extra={"inbox_id": claimed.id})
        await _record_failure(runtime, claimed, exc)
        return False
    if not await _save(runtime, [claimed], calls, runs):
        await _release_processes(runtime, held)
        return False
    return True


def _receiver(
    spec: PluginSpec, ctx: PluginContext[Any], request: WebhookRequest
) -> Callable[[], Awaitable[None]]:
    return lambda: spec.plugin.receive_webhook(ctx, request)


async def _save(
    runtime: Runtime,
    claimed: Sequence[Claimed],
    calls: Sequence[tuple[PluginInstance, PluginContext[Any]]],
    runs: Sequence[processes.Ran],
    emitted: Sequence[Emitted] = (),
) -> bool:
    """Mark ``claimed`` handled and save what their calls and process hooks recorded (events
    ``emitted`` by each of several webhooks first, each as its ``webhook.handle`` span's), in one
    transaction; then deliver the events from this job. False if a lease was lost (nothing is
    saved then) or saving failed (recorded on the first webhook)."""
    try:
        async with runtime.unit_of_work() as session:
            ids = [item.id for item in claimed]
            if not await repository.mark_handled(session, ids, claimed[0].lease, utcnow()):
                raise LeaseLost
            for handled_in, per_instance in emitted:
                with tracing.resumed(handled_in):
                    for instance, events in per_instance:
                        await record_emitted(session, instance, events)
            for instance, ctx in calls:
                await save_effects(session, runtime, instance, ctx)
            for ran in runs:
                await processes.apply(session, runtime, ran)
            rung = take_doorbells(session, "deliver")
    except LeaseLost:
        log.warning("webhooks taken over by another job", extra={"inbox_id": claimed[0].id})
        return False
    except Exception as exc:
        log.exception("saving a webhook's effects failed", extra={"inbox_id": claimed[0].id})
        await _record_failure(runtime, claimed[0], exc)
        return False
    await deliver_rung(runtime, rung)
    return True


async def _release_processes(runtime: Runtime, held: Sequence[processes.Held]) -> None:
    for process in held:
        await processes.release(runtime, process.process.id, process.version)


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
