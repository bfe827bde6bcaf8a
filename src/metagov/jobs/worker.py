"""``metagov worker``: the job functions run by arq workers against Redis.

Two of arq's defaults are changed on purpose: jobs are serialized as JSON, not pickle (anyone able
to write to Redis could otherwise run code in the worker), and results are not kept, so a job id
can be rung again as soon as its job has finished.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, cast

from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from arq.worker import Function, Worker, func

from metagov.config import Settings
from metagov.jobs.queue import Job
from metagov.jobs.sweeper import FUNCTIONS, JobFunction
from metagov.plugins.registry import PluginRegistry
from metagov.runtime import Runtime

log = logging.getLogger(__name__)

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


class ArqQueue:
    """Rings doorbells through Redis; any worker may answer.

    A doorbell is written the way arq's ``enqueue_job`` writes a job (the serialized job under
    its key, its id in the queue's sorted set), but with ``SET NX`` and ``ZADD NX`` in one
    pipelined transaction instead of ``WATCH``, ``EXISTS`` and ``MULTI``. The meaning is arq's:
    a job whose key is still queued or running is not added again.

    Doorbells rung while a write is on its way to Redis go together in the next one (group
    commit): under load, many requests share one round trip; when idle, nothing waits. Callers
    still return only once their jobs are in Redis.
    """

    def __init__(self, pool: ArqRedis, *, owns_pool: bool = True) -> None:
        self.pool = pool
        self._owns_pool = owns_pool
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
        async with self.pool.pipeline(transaction=True) as pipe:
            for job in jobs:
                # A deferred job is scored with its time, as arq's ``_defer_until`` does: workers
                # only take jobs whose score has passed.
                due_ms = max(now_ms, int(job.at * 1000)) if job.at is not None else now_ms
                data = serialize_job(job.name, job.args, {}, None, now_ms, serializer=serialize)
                expires = JOB_EXPIRES_MS + (due_ms - now_ms)
                pipe.set(job_key_prefix + job.key, data, px=expires, nx=True)
                pipe.zadd(QUEUE_NAME, {job.key: due_ms}, nx=True)
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


def build_worker(
    settings: Settings,
    *,
    burst: bool = False,
    registry: PluginRegistry | None = None,
    max_jobs: int = 10,
) -> Worker:
    """An arq worker for ``settings.redis_url``; ``burst`` stops it once the queue is empty."""
    if not settings.redis_url:
        raise ValueError("METAGOV_REDIS_URL is required to run workers")
    stack = AsyncExitStack()

    async def startup(ctx: dict[str, Any]) -> None:
        queue = ArqQueue(ctx["redis"], owns_pool=False)
        runtime = await stack.enter_async_context(Runtime.open(settings, registry, queue=queue))
        ctx["runtime"] = runtime
        if burst:  # one sweep instead of the cron, whose next tick would keep the queue non-empty
            await ctx["redis"].enqueue_job("sweep", _job_id=f"sweep:burst:{uuid.uuid4()}")

    async def shutdown(ctx: dict[str, Any]) -> None:
        await stack.aclose()

    step = max(1, round(settings.sweep_interval_seconds))
    functions = [_arq_function(name, fn) for name, fn in FUNCTIONS.items()]
    return Worker(
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
        health_check_interval=30,
    )
