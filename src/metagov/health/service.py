"""Workers' heartbeats: each worker says it is alive, every API process can tell whether any is.

In worker mode the API only rings doorbells; if no worker runs, nothing is delivered, no webhook
is handled and no process closes, while every request still succeeds. The heartbeat is what lets
``/readyz``, ``/metrics``, the log and ``metagov doctor`` say so. It is written to the database,
not Redis: every process already has that connection, it outlives a Redis outage, and it is the
store the rest of the gateway trusts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from metagov import metrics
from metagov.config import Settings
from metagov.db.base import utcnow
from metagov.db.engine import Database, Session
from metagov.health import repository

log = logging.getLogger(__name__)

# Rows of workers not seen for this long are dropped: enough to tell "none since yesterday".
FORGET_AFTER = timedelta(days=7)


@dataclass(frozen=True)
class WorkerStatus:
    """How many workers are alive, and when one was last seen."""

    alive: int
    last_seen: datetime | None
    now: datetime

    @property
    def unseen_seconds(self) -> float | None:
        """Seconds since a worker was last seen; None if none ever was."""
        if self.last_seen is None:
            return None
        return max(0.0, (self.now - self.last_seen).total_seconds())

    def describe(self) -> str:
        if self.alive:
            return "ok"
        if self.last_seen is None:
            return "none seen yet"
        return f"none seen for {self.unseen_seconds:.0f} s"


async def worker_status(
    session: Session, settings: Settings, now: datetime | None = None
) -> WorkerStatus:
    now = now or utcnow()
    since = now - timedelta(seconds=settings.worker_stale_seconds)
    return WorkerStatus(
        alive=await repository.alive_since(session, since),
        last_seen=await repository.last_seen(session),
        now=now,
    )


class WorkerWatch:
    """One API process's view of the workers: it sets the gauges each time it looks, and logs
    once when the last worker goes (and once when one is back), not on every probe."""

    def __init__(self) -> None:
        self._missing: bool | None = None

    def saw(self, status: WorkerStatus) -> None:
        metrics.WORKERS_ALIVE.set(status.alive)
        unseen = status.unseen_seconds
        metrics.WORKERS_UNSEEN.set(-1 if unseen is None else unseen)
        missing = status.alive == 0
        if missing and self._missing is not True:
            log.warning(
                "no worker is running (%s): jobs wait in Redis and nothing is delivered",
                status.describe(),
                extra={"workers": 0},
            )
        elif not missing and self._missing is True:
            log.info("a worker is running again", extra={"workers": status.alive})
        self._missing = missing


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Beats for one worker process, every ``worker_heartbeat_seconds``, with the state
    ``state()`` reports; on :meth:`stop` the row says ``stopped``. A database that cannot be
    reached is logged once per outage, and beating goes on."""

    def __init__(self, db: Database, settings: Settings, state: Callable[[], str]) -> None:
        self.db = db
        self.settings = settings
        self.state = state
        self.worker_id = new_worker_id()
        self.started_at = utcnow()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def beat(self) -> None:
        now = utcnow()
        async with self.db.statement() as conn:
            await repository.beat(
                conn,
                worker_id=self.worker_id,
                hostname=socket.gethostname()[:200],
                pid=os.getpid(),
                state=self.state(),
                started_at=self.started_at,
                now=now,
            )

    async def start(self) -> None:
        """Beat once (so the worker is seen as soon as it runs), then in the background."""
        async with self.db.statement() as conn:
            await repository.forget_before(conn, utcnow() - FORGET_AFTER)
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="worker heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_seconds)
            try:
                await self.beat()
            except Exception as exc:
                if not self._failing:
                    log.warning("cannot record the worker's heartbeat: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("worker heartbeat recorded again")
                self._failing = False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with self.db.statement() as conn:
                await repository.mark_stopped(conn, self.worker_id, utcnow())
        except Exception as exc:
            log.warning("cannot record that the worker stopped: %s", exc)
