"""Governance processes: starting them, reading them, closing them, and running their hooks.

Every hook (start, update, close, a webhook) runs the same way, with no transaction open while
the plugin talks to its platform:

1. **hold**: lease the process (one short statement that moves its ``version``), so no other
   hook runs on it meanwhile, and read a snapshot of it, its community and its instance;
2. **run** the hook on that snapshot (:func:`run_hook`);
3. **apply** what the hook recorded in one short transaction (:func:`apply`), only if the
   process still has the version the lease gave: a hook whose lease ran out, or whose process
   was cancelled meanwhile, saves nothing. Status changes go through :mod:`.lifecycle`, so a
   deadline closes a process exactly once however many schedulers race for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from metagov import tracing
from metagov.db.base import utcnow
from metagov.db.engine import Session
from metagov.db.models import Community, PluginInstance, Process, ProcessStatus
from metagov.errors import Conflict, NotFound
from metagov.instances import service as instances
from metagov.instances.service import PluginContractError
from metagov.jobs.queue import Job, ring_after_commit
from metagov.outbox import service as outbox
from metagov.plugins.registry import PluginSpec, ProcessSpec
from metagov.plugins.sdk import ProcessContext, State, WebhookRequest
from metagov.processes import lifecycle, repository
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

Hook = Literal["start", "update", "close", "webhook"]


class ProcessBusy(Conflict):
    """Another hook of the process is running and did not finish in time; send it again."""

    code = "process_busy"


@dataclass(frozen=True)
class Held:
    """A process this caller holds the lease on, with the snapshot its hook runs on."""

    process: Process
    community_slug: str
    instance: PluginInstance
    version: int


@dataclass
class Ran:
    """A hook that ran on a held process, and what it recorded."""

    held: Held
    spec: PluginSpec
    pspec: ProcessSpec
    ctx: ProcessContext[Any, Any]
    default: ProcessStatus | None


def _lease(runtime: Runtime, now: datetime) -> datetime:
    return now + timedelta(seconds=runtime.settings.process_lease_seconds)


def _context(
    runtime: Runtime,
    spec: PluginSpec,
    pspec: ProcessSpec,
    community_slug: str,
    instance: PluginInstance,
    process: Process,
) -> ProcessContext[Any, Any]:
    base = instances.build_context(runtime, spec, community_slug, instance)
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
        credentials_expire_at=base.credentials_expire_at,
        process_id=process.id,
        process_state=State(process.state),
        url=process.url,
        closing_at=process.closing_at,
        outcome=pspec.outcome_model.model_validate(process.outcome) if process.outcome else None,
    )


# --- holding a process ---------------------------------------------------------------------------


async def hold(
    runtime: Runtime,
    process_id: int,
    *,
    wait: bool = False,
    due_at: datetime | None = None,
    stalled: bool = False,
) -> Held | None:
    """Lease an open process and read its snapshot; None if it is not open (or, with
    ``due_at``, not due then; with ``stalled``, not a start that never finished).

    A process another hook holds is waited for when ``wait`` is true, up to
    ``process_lease_wait_seconds`` (then :class:`ProcessBusy`); otherwise it is left alone.
    """
    waited = 0.0
    pause = 0.02
    while True:
        now = due_at or utcnow()
        async with runtime.db.statement() as conn:
            version = await repository.claim(
                conn,
                process_id,
                now,
                _lease(runtime, utcnow()),
                due=due_at is not None,
                stalled=stalled,
            )
        if version is not None:
            break
        if not wait or not await _is_held_by_another(runtime, process_id):
            return None
        if waited >= runtime.settings.process_lease_wait_seconds:
            raise ProcessBusy(f"process {process_id} is busy with another hook; try again")
        await asyncio.sleep(pause)
        waited += pause
        pause = min(pause * 2, 0.5)
    async with runtime.db.snapshot() as session:
        found = await repository.snapshot(session, process_id)
    if found is None or found[2] is None:
        await release(runtime, process_id, version)
        if found is not None:
            raise Conflict(f"process {process_id} has no plugin instance any more")
        return None
    process, slug, instance = found
    assert instance is not None
    return Held(process, slug, instance, version)


async def _is_held_by_another(runtime: Runtime, process_id: int) -> bool:
    async with runtime.db.snapshot() as session:
        found = await repository.snapshot(session, process_id)
    if found is None or not lifecycle.is_open(found[0]):
        return False
    lease = found[0].lease_until
    return lease is not None and lease > utcnow()


async def release(runtime: Runtime, process_id: int, version: int) -> None:
    """Give the lease back without changing anything else (a hook failed)."""
    async with runtime.db.statement() as conn:
        await repository.release(conn, process_id, version)


# --- running and applying hooks ----------------------------------------------------------------


async def run_hook(
    runtime: Runtime,
    held: Held,
    hook: Hook,
    *,
    params: BaseModel | None = None,
    webhook: WebhookRequest | None = None,
) -> Ran:
    """Run one hook of a held process on its snapshot; nothing is saved here."""
    process = held.process
    spec = runtime.registry.get(process.plugin_name)
    pspec = spec.process(process.name)
    ctx = _context(runtime, spec, pspec, held.community_slug, held.instance, process)
    if params is None:
        params = pspec.params_model.model_validate(process.parameters)
    attributes = {"metagov.community": held.community_slug, "metagov.process_id": process.id}
    with tracing.span(f"process {process.full_name} {hook}", attributes=attributes):
        default = await _call_hook(spec, pspec, ctx, hook, params, webhook)
    return Ran(held, spec, pspec, ctx, default)


async def _call_hook(
    spec: PluginSpec,
    pspec: ProcessSpec,
    ctx: ProcessContext[Any, Any],
    hook: Hook,
    params: BaseModel,
    webhook: WebhookRequest | None,
) -> ProcessStatus | None:
    """Call one hook; the status the process takes if the hook sets none."""
    handler = pspec.handler
    default: ProcessStatus | None = None
    if hook == "start":
        await instances.call_plugin(spec, ctx, lambda: handler.start(ctx, params))
        default = ProcessStatus.PENDING
    elif hook == "update":
        await instances.call_plugin(spec, ctx, lambda: handler.update(ctx, params))
    elif hook == "close":
        await instances.call_plugin(spec, ctx, lambda: handler.close(ctx, params))
        default = ProcessStatus.COMPLETED
    else:
        assert webhook is not None
        await instances.call_plugin(
            spec, ctx, lambda: handler.receive_webhook(ctx, params, webhook)
        )
    return default


async def apply(session: Session, runtime: Runtime, ran: Ran) -> Process | None:
    """Save what a hook recorded onto its process, changing status through the rules, and record
    a process event if the outcome changed or the process ended; release the lease. None if the
    lease was lost meanwhile (nothing is saved then)."""
    held, ctx, pspec = ran.held, ran.ctx, ran.pspec
    process = await repository.lock_version(session, held.process.id, held.version)
    if process is None:
        log.warning(
            "process %s changed while its hook ran; the hook's effects are dropped",
            held.process.id,
            extra={"process_id": held.process.id},
        )
        return None
    before = (process.status, process.outcome)
    process.url = ctx.url
    process.closing_at = ctx.closing_at
    if ctx.outcome is not None:
        process.outcome = _outcome_json(pspec, ctx.outcome)
    if ctx.errors:
        process.errors = [*process.errors, *ctx.errors]
    if ctx.process_state.changed:
        process.state = ctx.process_state.apply_to(process.state)
    if ctx.listen_keys is not None and process.plugin_instance_id is not None:
        await repository.replace_listen_keys(
            session, process.id, process.plugin_instance_id, ctx.listen_keys
        )
    target = ProcessStatus(ctx.requested_status) if ctx.requested_status else ran.default
    if target is not None and target.value != process.status:
        lifecycle.transition(process, target)
    process.updated_at = utcnow()
    process.lease_until = None
    process.version += 1
    interval = pspec.handler.update_interval
    if process.status == ProcessStatus.PENDING and interval is not None:
        process.next_update_at = utcnow() + interval
    ended = process.status != before[0] and not lifecycle.is_open(process)
    started = before[0] == ProcessStatus.CREATED
    if ended or (process.outcome != before[1] and not started):
        await outbox.record_process_event(session, held.community_slug, process)
    ring_when_due(session, process)
    await instances.save_effects(session, runtime, held.instance, ctx)
    await session.flush()
    return process


def ring_when_due(session: Session, process: Process) -> None:
    """Ring the process's own doorbell for its next deadline or update, so that it is met to the
    moment rather than at the next sweep (which stays the safety net)."""
    if process.status != ProcessStatus.PENDING:
        return
    moment = _next_moment(process.closing_at, process.next_update_at)
    if moment is not None:
        ring_after_commit(session, due_job(process.id, moment))


def due_job(process_id: int, moment: datetime) -> Job:
    """The doorbell for a process's deadline or update at ``moment``. Its key names the moment,
    so the sweep ringing a deadline whose own doorbell is still queued (or running) adds
    nothing: a worker catching up on a burst of deadlines is not handed each one twice."""
    due = moment.timestamp() + 0.001  # never before the moment itself
    key = f"run_process:{process_id}:{int(due * 1000)}"
    return Job.of("run_process", process_id, key=key, at=due)


def _next_moment(*moments: datetime | None) -> datetime | None:
    return min((m for m in moments if m is not None), default=None)


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


async def _run_and_apply(runtime: Runtime, held: Held, hook: Hook) -> Process | None:
    """Run a hook of a held process and apply it; the lease is given back if the hook fails."""
    try:
        ran = await run_hook(runtime, held, hook)
    except BaseException:
        await release(runtime, held.process.id, held.version)
        raise
    async with runtime.unit_of_work() as session:
        return await apply(session, runtime, ran)


# --- what Drivers do --------------------------------------------------------------------------


async def start_process(
    runtime: Runtime,
    community: Community,
    instance: PluginInstance,
    spec: PluginSpec,
    pspec: ProcessSpec,
    params: BaseModel,
    *,
    callback_url: str | None = None,
) -> Process:
    """Create a process and run its ``start`` hook.

    The process is stored first (``created``, leased to this call), so the hook knows its id;
    if the hook fails it is deleted again, and the Driver gets the error. Should the gateway stop
    in between, the sweep fails the process once its lease runs out (``process.failed``).
    """
    instances.ensure_active(instance, spec.name)
    now = utcnow()
    async with runtime.unit_of_work() as session:
        process = await repository.insert_leased(
            session,
            Process(
                community_id=community.id,
                plugin_instance_id=instance.id,
                plugin_name=spec.name,
                name=pspec.slug,
                status=ProcessStatus.CREATED.value,
                callback_url=callback_url,
                parameters=params.model_dump(mode="json"),
                errors=[],
                state={},
                version=1,
                lease_until=_lease(runtime, now),
            ),
        )
    held = Held(process, community.slug, instance, 1)
    try:
        ran = await run_hook(runtime, held, "start", params=params)
    except BaseException:
        async with runtime.unit_of_work() as session:
            await repository.delete_if_version(session, process.id, 1)
        raise
    async with runtime.unit_of_work() as session:
        applied = await apply(session, runtime, ran)
    if applied is None:  # cancelled meanwhile (its plugin was disabled)
        raise Conflict(f"process {process.id} was cancelled while it started")
    return applied


async def get_process(
    session: Session, community: Community, plugin_name: str, slug: str, process_id: int
) -> Process:
    process = await repository.find(session, community.id, plugin_name, slug, process_id)
    if process is None:
        raise NotFound(f"no process {plugin_name}.{slug} with id {process_id} in this community")
    return process


async def list_processes(
    session: Session,
    community: Community,
    *,
    status: str | None = None,
    plugin: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[Process]:
    return await repository.list_of_community(
        session, community.id, status=status, plugin=plugin, limit=limit, offset=offset
    )


async def close_process(
    runtime: Runtime, community: Community, plugin_name: str, slug: str, process_id: int
) -> Process:
    """Close a process now (the Driver's DELETE): run the plugin's ``close`` hook and complete the
    process, unless the hook failed it. 409 if it has ended or its platform decides when it ends;
    a hook of the process that is running is waited for."""
    async with runtime.db.snapshot() as session:
        process = await get_process(session, community, plugin_name, slug, process_id)
    if not lifecycle.is_open(process):
        raise lifecycle.InvalidTransition(f"process {process.id} is already {process.status}")
    pspec = runtime.registry.get(plugin_name).process(slug)
    if not pspec.closable:
        raise Conflict(
            f"{process.full_name} cannot be closed early: {pspec.handler.not_closable_reason}"
        )
    held = await hold(runtime, process.id, wait=True)
    if held is None:
        async with runtime.db.snapshot() as session:
            process = await get_process(session, community, plugin_name, slug, process_id)
        raise lifecycle.InvalidTransition(f"process {process.id} is already {process.status}")
    closed = await _run_and_apply(runtime, held, "close")
    if closed is None:
        raise ProcessBusy(f"process {process_id} changed while it was being closed; try again")
    return closed


# --- what the scheduler does ---------------------------------------------------------------------


async def due_process_ids(
    runtime: Runtime, *, now: datetime | None = None, limit: int = 500
) -> tuple[list[int], list[int]]:
    """Ids of pending processes whose deadline passed, and of those due for an update; starts
    that never finished count as due to close."""
    stalled, closing, updating = await _due(runtime, now or utcnow(), limit)
    return [*stalled, *(i for i, _ in closing)], [i for i, _ in updating]


async def due_process_jobs(runtime: Runtime, *, now: datetime, limit: int = 500) -> list[Job]:
    """The doorbells for every process due at ``now`` (see :func:`due_process_ids`): a
    deadline's or update's under the key of its own deferred doorbell (:func:`due_job`)."""
    stalled, closing, updating = await _due(runtime, now, limit)
    jobs = {i: Job.of("run_process", i) for i in stalled}
    for process_id, moment in [*closing, *updating]:
        jobs.setdefault(process_id, due_job(process_id, moment))
    return list(jobs.values())


async def _due(
    runtime: Runtime, now: datetime, limit: int
) -> tuple[list[int], list[tuple[int, datetime]], list[tuple[int, datetime]]]:
    async with runtime.db.snapshot() as session:
        closing, updating = await repository.due(session, now, limit=limit)
        stalled = await repository.stalled(session, now, limit=limit)

    def moments(found: list[repository.Due]) -> list[tuple[int, datetime]]:
        return [(d.id, _next_moment(d.closing_at, d.next_update_at) or now) for d in found]

    return stalled, moments(closing), moments(updating)


async def open_counts(session: Session) -> list[tuple[str, int]]:
    return await repository.open_counts(session)
