"""The in-process job runner of the embedded mode: closes processes at their deadline and runs
their periodic updates, inside ``metagov serve``.

It keeps nothing in memory that matters: each pass asks the database what is due, so a restart
loses nothing and a deadline that passed while the gateway was down is acted on at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from metagov.runtime import Runtime
from metagov.services.processes import run_due_processes

log = logging.getLogger(__name__)


class InProcessScheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pass_done = asyncio.Condition()
        self._running = False
        self.passes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="metagov-scheduler")

    def poke(self) -> None:
        """Run a pass now instead of at the next interval."""
        self._wake.set()

    async def next_pass(self) -> None:
        """Wait until a whole pass that started after this call has finished."""
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

    async def _loop(self) -> None:
        interval = self.runtime.settings.scheduler_interval_seconds
        while True:
            self._running = True
            try:
                await run_due_processes(self.runtime)
            except Exception:
                log.exception("scheduler pass failed")
            async with self._pass_done:
                self._running = False
                self.passes += 1
                self._pass_done.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
