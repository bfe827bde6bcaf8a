"""The job functions, shared by the arq worker and the in-process runner, and the sweep that
finds what is due.

Every job takes the runtime and ids, reads the truth from the database and acts only if there is
still something to do, so a job that runs twice, late, or after a crash does no harm.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from metagov.db.base import utcnow
from metagov.inbox import handlers as inbox
from metagov.inbox.service import handle_job
from metagov.instances import handlers as instances
from metagov.jobs.queue import Job, JobArg
from metagov.outbox import handlers as outbox
from metagov.outbox import repository as outbox_repository
from metagov.processes import handlers as processes
from metagov.processes.service import due_process_jobs
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

# At most this many webhooks and processes are looked at per sweep: when work piles up, the
# sweep's own cost must not grow with the pile. What is left over is found by the next one.
SWEEP_LIMIT = 500

JobFunction = Callable[..., Awaitable[object]]


async def deliver(runtime: Runtime, partition: str) -> None:
    await outbox.deliver_partition(runtime, partition)


async def handle_webhook(runtime: Runtime, sender: JobArg) -> None:
    if isinstance(sender, int):  # a doorbell rung by an older gateway names the webhook
        await inbox.handle(runtime, sender)
    else:
        await inbox.handle_sender(runtime, sender)


async def run_process(runtime: Runtime, process_id: int) -> None:
    await processes.run_due_process(runtime, process_id)


async def run_task(runtime: Runtime, instance_id: int, task_name: str) -> None:
    await instances.run_task(runtime, instance_id, task_name)


@dataclass(frozen=True)
class SweepReport:
    deliveries: int
    webhooks: int
    processes: int
    tasks: int


async def sweep(runtime: Runtime) -> SweepReport:
    """Ring the doorbell for everything the database says is due.

    This is what makes Redis optional for correctness: lost jobs, flushed queues, crashed
    workers and deadlines that passed while nothing ran are all found here.
    """
    jobs, report = await due_jobs(runtime)
    try:
        await runtime.queue.enqueue_many(jobs)
    except Exception as exc:
        log.warning("sweep could not enqueue %s jobs: %s", len(jobs), exc)
    return report


async def due_jobs(
    runtime: Runtime, *, now: datetime | None = None
) -> tuple[list[Job], SweepReport]:
    """The jobs for everything due at ``now`` (default: the clock's now)."""
    now = now or utcnow()
    async with runtime.unit_of_work() as session:
        partitions = await outbox_repository.due_partitions(session, now)
        due_tasks = await instances.due_tasks(session, runtime.registry, now)
    senders = await inbox.due_senders(runtime, now, limit=SWEEP_LIMIT)
    due_processes = await due_process_jobs(runtime, now=now, limit=SWEEP_LIMIT)
    jobs = [
        # The key changes with each attempt: a job id held by a crashed worker (arq keeps it
        # "in progress" until its timeout) must not swallow the retry.
        *(Job.of("deliver", p, key=f"deliver:{p}:{seq}:{n}") for p, seq, n in partitions),
        *(handle_job(sender, newest) for sender, newest in senders),
        *due_processes,
        *(Job.of("run_task", i, name) for i, name in due_tasks),
    ]
    return jobs, SweepReport(len(partitions), len(senders), len(due_processes), len(due_tasks))


FUNCTIONS: dict[str, JobFunction] = {
    "deliver": deliver,
    "handle_webhook": handle_webhook,
    "run_process": run_process,
    "run_task": run_task,
    "sweep": sweep,
}


async def run_job(runtime: Runtime, job: Job) -> None:
    """Run one job in this process."""
    await FUNCTIONS[job.name](runtime, *job.args)
