"""``metagov worker``: the job functions run by arq workers against Redis.

Two of arq's defaults are changed on purpose: jobs are serialized as JSON, not pickle (anyone able
to write to Redis could otherwise run code in the worker), and results are not kept, so a job id
can be rung again as soon as its job has finished.

And a worker outlives Redis. Redis only rings doorbells, so losing it must not stop a worker: the
worker stops taking jobs, tries Redis again with a growing delay (logging the outage once, and
once more when it ends), and carries on where it was; the jobs rung meanwhile are found by the
sweep. Stopped with SIGTERM, it takes no new job and gives the running ones
``METAGOV_WORKER_SHUTDOWN_GRACE_SECONDS`` to finish; any still running then are cancelled and
put back in the queue, and the worker exits with status 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from typing import Any, cast

from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from arq.worker import Function, Worker, func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from metagov import metrics
from metagov.config import Settings
from metagov.health.service import Heartbeat
from metagov.jobs.queue import Job
from metagov.jobs.sweeper import FUNCTIONS, JobFunction
from metagov.plugins.registry import PluginRegistry
from metagov.preflight import shown_redis_url
from metagov.retry import Backoff
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

# What Redis going away looks like to its client (a connection lost during a WATCH surfaces as a
# WatchError).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, WatchError, OSError)
# Waits between attempts to reach Redis again: quick at first (a restart), then every 30 s.
RECONNECT = Backoff(Backoff.exponential(0.2, cap=30.0).delays, jitter=0.2)

QUEUE_NAME = "metagov:queue"
# How long a queued job may wait before arq drops it (arq's own default); the sweep rings again.
JOB_EXPIRES_MS = 24 * 3600 * 1000


def serialize(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def deserialize(raw: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(raw))


async def connect(redis_url: str) -> ArqRedis:
    return await create_pool(
        RedisSettings.from_dsn(redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE_NAME,
    )


# How many ids a slot's doorbells may use at once (one waiting or running, then the next).
_SLOT_IDS = 4
# KEYS: the queue, the slot's job keys, then their in-progress keys; ARGV: the serialized job,
# its score, its expiry (ms), then the slot's ids. Returns 1 (queued), 0 (one of the slot's jobs
# is waiting already: it will see the work) or -1 (all of them are running).
_RING_SCRIPT = """
local n = (#KEYS - 1) / 2
for i = 1, n do
  if redis.call('EXISTS', KEYS[1 + n + i]) == 0 then
    if redis.call('SET', KEYS[1 + i], ARGV[1], 'NX', 'PX', ARGV[3]) then
      redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[3 + i])
      return 1
    end
    return 0
  end
end
return -1
"""


def _add(pipe: Any, job_id: str, data: bytes, score_ms: int, expires_ms: int) -> None:
    """Queue a job under its own id, unless one with that id is queued or running already."""
    pipe.set(job_key_prefix + job_id, data, px=expires_ms, nx=True)
    pipe.zadd(QUEUE_NAME, {job_id: score_ms}, nx=True)


class ArqQueue:
    """Rings doorbells through Redis; any worker may answer.

    A doorbell is written the way arq's ``enqueue_job`` writes a job (the serialized job under
    its id, the id in the queue's sorted set), by one script per doorbell instead of ``WATCH``,
    ``EXISTS`` and ``MULTI``. The job's id is its slot (``handle_webhook:i12``), so doorbells
    coalesce: while the slot's job waits, ringing adds nothing (it will see the new work); while
    it runs, the doorbell queues the slot's second id (``…~1``), which runs after it or finds its
    lease and leaves the work to it; while both run, the third, and so on. Deferred doorbells keep
    their own keys, so a deadline's never hides a doorbell rung now.

    Doorbells rung while a write is on its way to Redis go together in the next one (group
    commit): under load, many requests share one round trip; when idle, nothing waits. Callers
    still return only once their jobs are in Redis.
    """

    def __init__(self, pool: ArqRedis, *, owns_pool: bool = True) -> None:
        self.pool = pool
        self._owns_pool = owns_pool
        self._ring = pool.register_script(_RING_SCRIPT)
        self._batch: tuple[list[Job], asyncio.Future[None]] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def enqueue(self, job: Job) -> None:
        await self.enqueue_many([job])

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        if self._batch is None:
            self._batch = ([], asyncio.get_running_loop().create_future())
        self._batch[0].extend(jobs)
        done = self._batch[1]
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="doorbells")
        # Shielded: a caller that gives up must not cancel the write of everyone's jobs.
        await asyncio.shield(done)

    async def _write_batches(self) -> None:
        while self._batch is not None:
            jobs, done = self._batch
            self._batch = None
            try:
                await self._write(jobs)
            except Exception as exc:
                done.set_exception(exc)
                done.exception()  # reported to the callers; not "never retrieved" if none wait
            else:
                done.set_result(None)

    async def _write(self, jobs: Sequence[Job]) -> None:
        now_ms = int(time.time() * 1000)
        rung: list[tuple[int, Job, bytes]] = []  # (index of the script's reply, job, its data)
        async with self.pool.pipeline(transaction=True) as pipe:
            replies = 0
            for job in jobs:
                data = serialize_job(job.name, job.args, {}, None, now_ms, serializer=serialize)
                if job.at is None:
                    ids = [job.slot, *(f"{job.slot}~{n}" for n in range(1, _SLOT_IDS))]
                    keys = [QUEUE_NAME, *(job_key_prefix + i for i in ids)]
                    keys += [in_progress_key_prefix + i for i in ids]
                    await self._ring(
                        keys=keys, args=[data, now_ms, JOB_EXPIRES_MS, *ids], client=pipe
                    )
                    rung.append((replies, job, data))
                    replies += 1
                    continue
                # A deferred job is scored with its time, as arq's ``_defer_until`` does: workers
                # only take jobs whose score has passed.
                due_ms = max(now_ms, int(job.at * 1000))
                _add(pipe, job.key, data, due_ms, JOB_EXPIRES_MS + due_ms - now_ms)
                replies += 2
            found = await pipe.execute()
        # Every id of the slot running at once (many workers on one sender): an id of its own.
        crowded = [(job, data) for at, job, data in rung if found[at] == -1]
        if crowded:
            async with self.pool.pipeline(transaction=False) as pipe:
                for job, data in crowded:
                    _add(pipe, f"{job.slot}~{uuid.uuid4().hex}", data, now_ms, JOB_EXPIRES_MS)
                await pipe.execute()

    async def ping(self) -> bool:
        return bool(await self.pool.ping())

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._owns_pool:
            await self.pool.aclose()


@dataclass(frozen=True)
class JobContext:
    """The typed view of arq's ``ctx`` dict."""

    runtime: Runtime
    job_id: str
    job_try: int

    @classmethod
    def of(cls, ctx: dict[str, Any]) -> JobContext:
        return cls(
            runtime=ctx["runtime"],
            job_id=str(ctx.get("job_id")),
            job_try=int(ctx.get("job_try", 1)),
        )


def _arq_function(name: str, function: JobFunction) -> Function:
    async def run(ctx: dict[str, Any], *args: Any) -> None:
        job = JobContext.of(ctx)
        log.debug("job %s try %s", job.job_id, job.job_try)
        await function(job.runtime, *args)

    run.__qualname__ = run.__name__ = name
    return func(run, name=name, max_tries=3)


class WorkerState:
    """What a worker process knows of itself: for its heartbeat and its probes."""

    def __init__(self) -> None:
        self.redis_ok = True
        self.stopping = False

    def describe(self) -> str:
        if self.stopping:
            return "stopping"
        return "running" if self.redis_ok else "redis unavailable"


class GatewayWorker(Worker):
    """arq's worker, riding out Redis outages instead of dying of the first one."""

    def __init__(self, *args: Any, state: WorkerState, redis_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = state
        self.redis_url = redis_url

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            await self._ride_out(exc)

    async def _reachable(self) -> bool:
        try:
            await self.pool.ping()
        except REDIS_DOWN:
            return False
        return True

    async def _ride_out(self, exc: BaseException) -> None:
        """Wait until Redis answers again. The client reconnects by itself on the next command,
        so the pool, and the runtime's queue on it, carry on afterwards."""
        if await self._reachable():
            # A job's bookkeeping failed during a blip that is already over: nothing to wait for.
            log.debug("a Redis command failed but Redis answers: %s", exc)
            return
        self.state.redis_ok = False
        metrics.REDIS_AVAILABLE.set(0)
        log.warning(
            "lost Redis at METAGOV_REDIS_URL (%s): %s. No job is taken until it is back; "
            "retrying with backoff",
            shown_redis_url(self.redis_url),
            (str(exc) or type(exc).__name__).rstrip("."),
        )
        began = time.monotonic()
        attempts = 0
        while not await self._reachable():
            attempts += 1
            metrics.REDIS_RETRIES.inc()
            await asyncio.sleep(RECONNECT.delay(attempts))
        self.state.redis_ok = True
        metrics.REDIS_AVAILABLE.set(1)
        log.info("Redis is back after %.0f s; taking jobs again", time.monotonic() - began)

    async def _sleep_until_tasks_complete(self) -> None:
        # arq waits until its task list is empty, but only a poll of Redis empties it: during an
        # outage a stopping worker would wait out its whole grace period for jobs long done.
        running = [task for task in self.tasks.values() if not task.done()]
        if running:
            await asyncio.wait(running)

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        self.state.stopping = True
        super().handle_sig_wait_for_completion(signum)

    def handle_sig(self, signum: signal.Signals) -> None:
        self.state.stopping = True
        super().handle_sig(signum)

    async def close(self) -> None:
        """arq's ``close``, except that a job that failed, or a Redis that is gone, does not
        turn a clean stop into a traceback: the runtime is closed whatever Redis says."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with suppress(*REDIS_DOWN):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with suppress(*REDIS_DOWN):
            await self.pool.aclose(close_connection_pool=True)
        self._pool = None


def build_worker(
    settings: Settings,
    *,
    burst: bool = False,
    registry: PluginRegistry | None = None,
    max_jobs: int = 10,
    state: WorkerState | None = None,
) -> GatewayWorker:
    """An arq worker for ``settings.redis_url``; ``burst`` stops it once the queue is empty."""
    if not settings.redis_url:
        raise ValueError("METAGOV_REDIS_URL is required to run workers")
    stack = AsyncExitStack()
    state = state or WorkerState()

    async def startup(ctx: dict[str, Any]) -> None:
        queue = ArqQueue(ctx["redis"], owns_pool=False)
        runtime = await stack.enter_async_context(Runtime.open(settings, registry, queue=queue))
        ctx["runtime"] = runtime
        heartbeat = Heartbeat(runtime.db, settings, state.describe)
        await heartbeat.start()
        stack.push_async_callback(heartbeat.stop)
        metrics.REDIS_AVAILABLE.set(1)
        if burst:  # one sweep instead of the cron, whose next tick would keep the queue non-empty
            await ctx["redis"].enqueue_job("sweep", _job_id=f"sweep:burst:{uuid.uuid4()}")

    async def shutdown(ctx: dict[str, Any]) -> None:
        await stack.aclose()

    step = max(1, round(settings.sweep_interval_seconds))
    functions = [_arq_function(name, fn) for name, fn in FUNCTIONS.items()]
    return GatewayWorker(
        state=state,
        redis_url=settings.redis_url,
        functions=functions,
        queue_name=QUEUE_NAME,
        cron_jobs=[]
        if burst
        else [
            cron(
                _arq_function("sweep", FUNCTIONS["sweep"]).coroutine,
                name="sweep-cron",
                second=set(range(0, 60, step)),
                microsecond=0,
                unique=True,
                run_at_startup=True,
            )
        ],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        on_startup=startup,
        on_shutdown=shutdown,
        job_serializer=serialize,
        job_deserializer=deserialize,
        keep_result=0,
        max_tries=3,
        job_timeout=300,
        max_jobs=max_jobs,
        burst=burst,
        # How long a doorbell may wait before a worker sees it: each poll is one cheap Redis
        # command, and every hop of an event (webhook to event, event to Driver) waits for one.
        poll_delay=0.05,
        handle_signals=not burst,
        job_completion_wait=settings.worker_shutdown_grace_seconds,
        health_check_interval=30,
    )
