"""Governance processes: starting them, reading them, closing them, and the scheduler's passes.

Every hook call (start, update, close) follows the same path: lock the process row, build the
context, run the hook, apply what it recorded through :mod:`metagov.services.lifecycle`, save the
plugin's state changes and events — all in the caller's transaction. The row lock (and on SQLite,
the single writer) makes sure one process never has two hooks running at once, and that a
deadline close happens exactly once however many schedulers race for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import and_, bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.base import utcnow
from metagov.db.models import Community, PluginInstance, Process, ProcessListenKey
from metagov.errors import Conflict, NotFound
from metagov.jobs.queue import take_doorbells, unit_of_work
from metagov.plugins.registry import PluginSpec, ProcessSpec
from metagov.plugins.sdk import GovernanceProcess, ProcessContext, State, WebhookRequest
from metagov.runtime import Runtime
from metagov.services import deliveries, events, lifecycle
from metagov.services.lifecycle import ProcessStatus
from metagov.services.plugins import (
    build_context,
    call_plugin,
    ensure_active,
    resolve_instance,
    save_effects,
)

log = logging.getLogger(__name__)


class PluginContractError(Exception):
    """A plugin returned something its own declarations do not allow (a plugin bug)."""


def _context(
    runtime: Runtime,
    spec: PluginSpec,
    pspec: ProcessSpec,
    community: Community,
    instance: PluginInstance,
    process: Process,
) -> ProcessContext[Any, Any]:
    base = build_context(runtime, spec, community, instance)
    return ProcessContext(
        community=base.community,
        plugin_name=base.plugin_name,
        instance_id=base.instance_id,
        community_platform_id=base.community_platform_id,
        config=base.config,
        state=base.state,
        http=base.http,
        log=base.log,
        settings=base.settings,
        base_url=base.base_url,
        secret_fields=base.secret_fields,
        process_id=process.id,
        process_state=State(process.state),
        url=process.url,
        closing_at=process.closing_at,
        outcome=pspec.outcome_model.model_validate(process.outcome) if process.outcome else None,
    )


async def _apply(
    session: AsyncSession,
    community: Community,
    process: Process,
    pspec: ProcessSpec,
    ctx: ProcessContext[Any, Any],
    *,
    default: ProcessStatus | None,
) -> None:
    """Copy what a hook recorded on ``ctx`` onto the row, changing status through the rules,
    and record a process event if the outcome changed or the process ended."""
    before = (process.status, process.outcome)
    process.url = ctx.url
    process.closing_at = ctx.closing_at
    if ctx.outcome is not None:
        process.outcome = _outcome_json(pspec, ctx.outcome)
    if ctx.errors:
        process.errors = [*process.errors, *ctx.errors]
        ctx.errors.clear()
    if ctx.process_state.changed:
        process.state = ctx.process_state.apply_to(process.state)
    if ctx.listen_keys is not None:
        await _listen(session, process, ctx.listen_keys)
        ctx.listen_keys = None
    target = ProcessStatus(ctx.requested_status) if ctx.requested_status else default
    if target is not None and target.value != process.status:
        lifecycle.transition(process, target)
    ctx.requested_status = None
    process.updated_at = utcnow()
    interval = pspec.handler.update_interval
    if process.status == ProcessStatus.PENDING and interval is not None:
        process.next_update_at = utcnow() + interval
    ended = process.status != before[0] and not lifecycle.is_open(process)
    started = before[0] == ProcessStatus.CREATED
    if ended or (process.outcome != before[1] and not started):
        await events.record_process_event(session, community, process)


async def _listen(session: AsyncSession, process: Process, keys: Sequence[str]) -> None:
    """Replace what ``process`` listens to (see ``ProcessContext.listen``)."""
    await session.execute(delete(ProcessListenKey).where(ProcessListenKey.process_id == process.id))
    if keys and process.plugin_instance_id is not None:
        session.add_all(
            ProcessListenKey(
                process_id=process.id, key=key, plugin_instance_id=process.plugin_instance_id
            )
            for key in keys
        )


def _outcome_json(pspec: ProcessSpec, outcome: Any) -> dict[str, Any]:
    try:
        model = (
            outcome
            if isinstance(outcome, pspec.outcome_model)
            else pspec.outcome_model.model_validate(outcome)
        )
    except ValidationError as exc:
        raise PluginContractError(
            f"process {pspec.slug!r} recorded an outcome that breaks its outcome_model: {exc}"
        ) from exc
    return model.model_dump(mode="json")


async def start_process(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    spec: PluginSpec,
    pspec: ProcessSpec,
    params: BaseModel,
    *,
    callback_url: str | None = None,
    community_platform_id: str | None = None,
) -> Process:
    instance = await resolve_instance(session, community, spec.name, community_platform_id)
    process = Process(
        community_id=community.id,
        plugin_instance_id=instance.id,
        plugin_name=spec.name,
        name=pspec.slug,
        status=ProcessStatus.CREATED.value,
        callback_url=callback_url,
        parameters=params.model_dump(mode="json"),
        errors=[],
        state={},
    )
    session.add(process)
    await session.flush()
    ensure_active(instance, spec.name)
    ctx = _context(runtime, spec, pspec, community, instance, process)
    await call_plugin(spec, ctx, lambda: pspec.handler.start(ctx, params))
    await _apply(session, community, process, pspec, ctx, default=ProcessStatus.PENDING)
    await save_effects(session, runtime, instance, ctx)
    await session.flush()
    return process


async def get_process(
    session: AsyncSession,
    community: Community,
    plugin_name: str,
    slug: str,
    process_id: int,
    *,
    lock: bool = False,
) -> Process:
    query = select(Process).where(
        Process.id == process_id,
        Process.community_id == community.id,
        Process.plugin_name == plugin_name,
        Process.name == slug,
    )
    if lock:
        query = query.with_for_update()
    process = await session.scalar(query)
    if process is None:
        raise NotFound(f"no process {plugin_name}.{slug} with id {process_id} in this community")
    return process


async def list_processes(
    session: AsyncSession,
    community: Community,
    *,
    status: str | None = None,
    plugin: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[Process]:
    query = select(Process).where(Process.community_id == community.id)
    if status is not None:
        query = query.where(Process.status == status)
    if plugin is not None:
        query = query.where(Process.plugin_name == plugin)
    query = query.order_by(Process.id.desc()).limit(limit).offset(offset)
    return (await session.scalars(query)).all()


async def _instance_of(session: AsyncSession, process: Process) -> PluginInstance:
    instance = (
        await session.get(PluginInstance, process.plugin_instance_id)
        if process.plugin_instance_id is not None
        else None
    )
    if instance is None:
        raise Conflict(f"process {process.id} has no plugin instance any more")
    return instance


async def _run_hook(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    process: Process,
    call: Callable[
        [GovernanceProcess[Any, Any, Any], ProcessContext[Any, Any], BaseModel], Awaitable[None]
    ],
    *,
    default: ProcessStatus | None,
) -> Process:
    """Run one hook of an existing process and apply what it recorded: the one path that close,
    update and webhooks share."""
    spec = runtime.registry.get(process.plugin_name)
    pspec = spec.process(process.name)
    instance = await _instance_of(session, process)
    ctx = _context(runtime, spec, pspec, community, instance, process)
    params = pspec.params_model.model_validate(process.parameters)
    await call_plugin(spec, ctx, lambda: call(pspec.handler, ctx, params))
    await _apply(session, community, process, pspec, ctx, default=default)
    await save_effects(session, runtime, instance, ctx)
    await session.flush()
    return process


async def close_process(
    session: AsyncSession, runtime: Runtime, community: Community, process: Process
) -> Process:
    """Close ``process`` now (Driver's request or deadline): run the plugin's ``close`` hook and
    complete the process, unless the hook failed it. ``process`` must be locked by the caller."""
    if not lifecycle.is_open(process):
        raise lifecycle.InvalidTransition(f"process {process.id} is already {process.status}")
    if not runtime.registry.get(process.plugin_name).process(process.name).closable:
        raise Conflict(f"{process.full_name} cannot be closed early; it ends on the platform")
    return await _run_hook(
        session,
        runtime,
        community,
        process,
        lambda handler, ctx, params: handler.close(ctx, params),
        default=ProcessStatus.COMPLETED,
    )


async def update_process(
    session: AsyncSession, runtime: Runtime, community: Community, process: Process
) -> Process:
    """Run the plugin's ``update`` hook (polling the platform) for a pending process."""
    return await _run_hook(
        session,
        runtime,
        community,
        process,
        lambda handler, ctx, params: handler.update(ctx, params),
        default=None,
    )


async def receive_webhook(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    process: Process,
    request: WebhookRequest,
) -> None:
    """Hand a webhook of the process's instance to its ``receive_webhook`` hook."""
    await _run_hook(
        session,
        runtime,
        community,
        process,
        lambda handler, ctx, params: handler.receive_webhook(ctx, params, request),
        default=None,
    )


# --- scheduler passes -------------------------------------------------------------------------


async def due_process_ids(
    runtime: Runtime, *, now: datetime | None = None, limit: int = 500
) -> tuple[list[int], list[int]]:
    """Ids of pending processes whose deadline passed, and of those due for an update."""
    now = now or utcnow()
    pending = and_(
        Process.status == ProcessStatus.PENDING.value,
        or_(Process.retry_at.is_(None), Process.retry_at <= now),
    )
    async with runtime.sessions() as session:
        closing = await session.scalars(
            select(Process.id)
            .where(pending, Process.closing_at <= now)
            .order_by(Process.closing_at)
            .limit(limit)
        )
        updating = await session.scalars(
            select(Process.id)
            .where(pending, Process.next_update_at <= now)
            .order_by(Process.next_update_at)
            .limit(limit)
        )
        return list(closing), list(updating)


# The scheduler's claim of one process, with its community and instance; built once.
_CLAIM_DUE = (
    select(Process, Community, PluginInstance)
    .join(Community, Community.id == Process.community_id)
    .outerjoin(PluginInstance, PluginInstance.id == Process.plugin_instance_id)
    .where(Process.id == bindparam("process_id"), Process.status == ProcessStatus.PENDING.value)
    .with_for_update(of=Process, skip_locked=True)
)


async def run_due_process(
    runtime: Runtime, process_id: int, *, now: datetime | None = None
) -> bool:
    """Close or update one process if it is still due. Returns whether a hook ran.

    Safe to call from several workers at once: the row is claimed with ``FOR UPDATE SKIP
    LOCKED`` (on SQLite, the single writer serializes instead), and the due condition is checked
    again after the claim, so each deadline closes the process exactly once. The events the hook
    recorded are delivered from here once committed.
    """
    now = now or utcnow()
    try:
        async with unit_of_work(runtime) as session:
            # The community and the instance come along, so the hook finds them in the session.
            found = (await session.execute(_CLAIM_DUE, {"process_id": process_id})).one_or_none()
            if found is None:
                return False
            process, community, _ = found
            if process.retry_at is not None and process.retry_at > now:
                return False
            process.retry_at = None
            if process.closing_at is not None and process.closing_at <= now:
                await _close_at_deadline(session, runtime, community, process)
            elif process.next_update_at is not None and process.next_update_at <= now:
                await update_process(session, runtime, community, process)
            else:
                return False
            rung = take_doorbells(session, "deliver")
    except Exception as exc:
        log.exception(
            "process %s: scheduled hook failed", process_id, extra={"process_id": process_id}
        )
        await _record_failure(runtime, process_id, exc)
        return False
    await deliveries.deliver_rung(runtime, rung)
    return True


async def _close_at_deadline(
    session: AsyncSession, runtime: Runtime, community: Community, process: Process
) -> None:
    spec = runtime.registry.get(process.plugin_name)
    if spec.process(process.name).closable:
        await close_process(session, runtime, community, process)
    else:
        # The platform decides when it ends; keep polling instead of closing.
        process.closing_at = None


async def _record_failure(runtime: Runtime, process_id: int, exc: Exception) -> None:
    """Note a failed scheduled hook on the process and back off before trying again."""
    retry_at = utcnow() + timedelta(seconds=max(runtime.settings.sweep_interval_seconds, 30))
    async with runtime.sessions() as session, session.begin():
        process = await session.get(Process, process_id)
        if process is None or not lifecycle.is_open(process):
            return
        error = {
            "message": f"scheduled hook failed: {type(exc).__name__}",
            "at": utcnow().isoformat(),
        }
        process.errors = [*[e for e in process.errors if not _is_hook_failure(e)], error]
        process.retry_at = retry_at


def _is_hook_failure(error: Any) -> bool:
    return isinstance(error, dict) and str(error.get("message", "")).startswith(
        "scheduled hook failed"
    )


async def run_due_processes(runtime: Runtime, *, now: datetime | None = None) -> int:
    """One scheduler pass: close and update every due process. Returns how many hooks ran."""
    closing, updating = await due_process_ids(runtime, now=now)
    ran = 0
    for process_id in dict.fromkeys([*closing, *updating]):
        ran += await run_due_process(runtime, process_id, now=now)
    return ran
