"""The in-process job runner of the embedded mode (no Redis): ``metagov serve`` runs the jobs
itself and sweeps every ``METAGOV_SWEEP_INTERVAL_SECONDS``.

It keeps nothing in memory that matters: each sweep asks the database what is due, so a restart
loses nothing and a deadline that passed while the gateway was down is met at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from metagov.jobs.queue import LocalQueue
from metagov.jobs.sweeper import run_job, sweep
from metagov.runtime import Runtime

log = logging.getLogger(__name__)


class EmbeddedRunner:
    """Runs the jobs rung into ``runtime.queue`` (a :class:`LocalQueue`) and sweeps."""

    def __init__(self, runtime: Runtime, queue: LocalQueue) -> None:
        self.runtime = runtime
        self.queue = queue
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pass_done = asyncio.Condition()
        self._running = False
        self.passes = 0

    def start(self) -> None:
        self.queue.start(lambda job: run_job(self.runtime, job))
        self._task = asyncio.create_task(self._loop(), name="metagov-sweeper")

    def poke(self) -> None:
        """Sweep now instead of at the next interval."""
        self._wake.set()

    async def next_pass(self) -> None:
        """Wait until a sweep that started after this call, and the jobs it rang, are done."""
        async with self._pass_done:
            target = self.passes + (2 if self._running else 1)
            self.poke()
            await self._pass_done.wait_for(lambda: self.passes >= target)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.queue.close()

    async def _loop(self) -> None:
        interval = self.runtime.settings.sweep_interval_seconds
        while True:
            self._running = True
            try:
                await sweep(self.runtime)
                await self.queue.join()
            except Exception:
                log.exception("sweep failed")
            async with self._pass_done:
                self._running = False
                self.passes += 1
                self._pass_done.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
