"""The scheduler's jobs for processes (``run_process``): closing them at their deadline,
running their ``update`` hook on its interval, and failing starts that never finished.

Safe to run from several workers at once: a process is leased only if it is still due, so each
deadline closes it exactly once. The events a hook recorded are delivered from the job that
committed them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from metagov.db.base import utcnow
from metagov.db.models import ProcessStatus
from metagov.jobs.queue import take_doorbells
from metagov.outbox import service as outbox
from metagov.outbox.handlers import deliver_rung
from metagov.processes import lifecycle, repository
from metagov.processes.service import (
    Held,
    Hook,
    apply,
    due_process_ids,
    hold,
    ring_when_due,
    run_hook,
)
from metagov.retry import Backoff
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

# How long a process whose scheduled hook failed waits before the scheduler tries again.
HOOK_BACKOFF = Backoff.constant(30.0)


async def run_due_process(
    runtime: Runtime, process_id: int, *, now: datetime | None = None
) -> bool:
    """Close or update one process if it is still due (or fail a start that never finished).
    Returns whether a hook ran.

    Safe to call from several workers at once: the lease is taken only if the process is still
    due, so each deadline closes the process exactly once. The events the hook recorded are
    delivered from here once committed.
    """
    now = now or utcnow()
    held = await hold(runtime, process_id, due_at=now)
    if held is None:
        return await _fail_stalled_start(runtime, process_id)
    process = held.process
    try:
        if process.closing_at is not None and process.closing_at <= now:
            if runtime.registry.get(process.plugin_name).process(process.name).closable:
                await _deliver_after(runtime, held, "close")
            else:
                # The platform decides when it ends: stop waiting for the deadline, keep polling.
                await _forget_deadline(runtime, held)
        else:
            await _deliver_after(runtime, held, "update")
    except Exception as exc:
        log.exception(
            "process %s: scheduled hook failed", process_id, extra={"process_id": process_id}
        )
        await _record_failure(runtime, held, exc)
        return False
    return True


async def _deliver_after(runtime: Runtime, held: Held, hook: Hook) -> None:
    """Run and apply a scheduled hook, then deliver the events it recorded from this job."""
    ran = await run_hook(runtime, held, hook)
    async with runtime.unit_of_work() as session:
        await apply(session, runtime, ran)
        rung = take_doorbells(session, "deliver")  # delivered from here; the others are rung
    await deliver_rung(runtime, rung)


async def _forget_deadline(runtime: Runtime, held: Held) -> None:
    async with runtime.unit_of_work() as session:
        process = await repository.lock_version(session, held.process.id, held.version)
        if process is not None:
            process.closing_at = None
            process.lease_until = None
            process.version += 1
            ring_when_due(session, process)


async def _fail_stalled_start(runtime: Runtime, process_id: int) -> bool:
    """Fail a process whose start never finished (the gateway stopped mid-start)."""
    held = await hold(runtime, process_id, stalled=True)
    if held is None:
        return False
    async with runtime.unit_of_work() as session:
        process = await repository.lock_version(session, held.process.id, held.version)
        if process is None:
            return False
        lifecycle.transition(process, ProcessStatus.FAILED)
        process.errors = [*process.errors, {"message": "the process did not finish starting"}]
        process.lease_until = None
        process.version += 1
        await outbox.record_process_event(session, held.community_slug, process)
    return True


async def _record_failure(runtime: Runtime, held: Held, exc: Exception) -> None:
    """Note a failed scheduled hook on the process, give the lease back, and back off."""
    delay = max(runtime.settings.sweep_interval_seconds, HOOK_BACKOFF.delay(1))
    async with runtime.unit_of_work() as session:
        process = await repository.lock_version(session, held.process.id, held.version)
        if process is None or not lifecycle.is_open(process):
            return
        error = {
            "message": f"scheduled hook failed: {type(exc).__name__}",
            "at": utcnow().isoformat(),
        }
        process.errors = [*[e for e in process.errors if not _is_hook_failure(e)], error]
        process.retry_at = utcnow() + timedelta(seconds=delay)
        process.lease_until = None
        process.version += 1


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
