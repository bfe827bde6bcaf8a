"""Job queues. A job is only a doorbell: its arguments are ids, and the job reads what to do
from the database. Losing one (Redis flushed, worker killed) delays work until the next sweep;
running one twice does nothing the second time.

Doorbells rung inside a unit of work are sent only after it commits, so a worker never looks for
a row that is not there yet. This module knows nothing of what jobs do: the runner that executes
them is given to :class:`LocalQueue` when it starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from metagov.db.engine import Session

log = logging.getLogger(__name__)

JobArg = int | str


@dataclass(frozen=True)
class Job:
    """A named job with id arguments. Every queue runs one job per *slot* (name and arguments)
    at a time: ringing while that slot's job waits adds nothing, and ringing while it runs makes
    it run once more afterwards, so a burst of doorbells for one sender or partition costs a
    job or two, and none rung is missed. ``at`` (seconds since the epoch) defers a job: a
    deadline rings its own doorbell for the moment it passes; ``key`` tells deferred doorbells
    (and those rung in one transaction) apart."""

    name: str
    args: tuple[JobArg, ...]
    key: str
    at: float | None = None

    @classmethod
    def of(cls, name: str, *args: JobArg, key: str | None = None, at: float | None = None) -> Job:
        return cls(name, args, key or slot_of(name, args), at)

    @property
    def slot(self) -> str:
        """What the job works on (its name and arguments): two doorbells for the same slot ask
        for the same work, however their keys differ."""
        return slot_of(self.name, self.args)


def slot_of(name: str, args: Sequence[JobArg]) -> str:
    return ":".join([name, *map(str, args)])


class JobQueue(Protocol):
    async def enqueue(self, job: Job) -> None: ...

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        """Ring several doorbells at once (one round trip where the queue is remote)."""
        ...

    async def close(self) -> None: ...


class NullQueue:
    """For processes that never run jobs (the CLI): the sweep of a running gateway picks up."""

    async def enqueue(self, job: Job) -> None:
        return None

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        return None

    async def close(self) -> None:
        return None


JobRunner = Callable[[Job], Awaitable[object]]


class LocalQueue:
    """Runs jobs as asyncio tasks in this process (the embedded mode).

    One task per job name and arguments at a time; a doorbell rung while that task runs makes it
    run once more when it finishes, so nothing rung is missed. At most ``max_jobs`` run at once
    (the others wait their turn), like an arq worker's ``max_jobs``: a backlog must not become
    hundreds of jobs competing for the database's connections and SQLite's single writer.

    Jobs rung before :meth:`start` gives the queue its runner wait for it.
    """

    def __init__(self, *, max_jobs: int = 10) -> None:
        self._run_job: JobRunner | None = None
        self._started = asyncio.Event()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._running: dict[tuple[str, tuple[JobArg, ...]], asyncio.Task[None]] = {}
        self._again: set[tuple[str, tuple[JobArg, ...]]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots = asyncio.Semaphore(max_jobs)

    def start(self, run_job: JobRunner) -> None:
        self._run_job = run_job
        self._started.set()

    async def enqueue(self, job: Job) -> None:
        if job.at is not None and job.at > time.time():
            self._defer(job)
            return
        slot = (job.name, job.args)
        if slot in self._running:
            self._again.add(slot)
            return
        self._idle.clear()
        self._running[slot] = asyncio.create_task(self._run(job), name=f"job {job.key}")

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            await self.enqueue(job)

    def _defer(self, job: Job) -> None:
        """Ring ``job`` when its time comes."""
        assert job.at is not None
        if job.key in self._timers:
            return
        now = asyncio.get_running_loop().time()
        delay = max(0.0, job.at - time.time())
        due = Job(job.name, job.args, job.key)

        def ring() -> None:
            self._timers.pop(job.key, None)
            asyncio.get_running_loop().create_task(self.enqueue(due))

        self._timers[job.key] = asyncio.get_running_loop().call_at(now + delay, ring)

    async def _run(self, job: Job) -> None:
        slot = (job.name, job.args)
        try:
            await self._started.wait()
            while True:
                self._again.discard(slot)
                async with self._slots:
                    try:
                        assert self._run_job is not None
                        await self._run_job(job)
                    except Exception:
                        log.exception("job %s failed", job.key)
                if slot not in self._again:
                    break
        finally:
            self._running.pop(slot, None)
            if not self._running:
                self._idle.set()

    async def join(self) -> None:
        """Wait until no job is running (tests and graceful shutdown)."""
        while self._running:
            await self._idle.wait()

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        self._running.clear()


def ring_after_commit(session: Session, job: Job) -> None:
    """Send ``job`` once the session's transaction commits (never if it rolls back)."""
    session.info.setdefault("doorbells", {})[job.key] = job


def take_doorbells(session: Session, name: str | None = None) -> list[Job]:
    """Withdraw the doorbells (named ``name``, or all) rung so far in ``session``: for a caller
    that sends them itself after the commit, or does their work itself instead."""
    rung: dict[str, Job] = session.info.get("doorbells", {})
    taken = [job for job in rung.values() if name is None or job.name == name]
    for job in taken:
        del rung[job.key]
    return taken


async def send_doorbells(queue: JobQueue, jobs: Sequence[Job]) -> None:
    """Ring ``jobs`` for rows already committed. A failure to reach the queue is only logged:
    the rows are in the database, and the sweep will find them."""
    if not jobs:
        return
    try:
        await queue.enqueue_many(jobs)
    except Exception as exc:
        keys = ", ".join(job.key for job in jobs)
        log.warning("could not enqueue %s (the sweep will retry): %s", keys, exc)
