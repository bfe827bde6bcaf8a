"""Workers for real: PostgreSQL, Redis, arq workers (in-process and as subprocesses) and a Driver
on a real loopback socket.

These tests only make sense on PostgreSQL with Redis (the production mode), so their database
fixture is parametrized over PostgreSQL alone. They use their own Redis database
(conftest's ``REDIS_URL``, one per pytest-xdist worker), emptied before and after each test.

In-process workers run in burst mode (they stop once the queue is empty). They are given
``sweep_interval_seconds=60``: with the default of 1 s, the sweep cron keeps a deferred job in the
queue at all times and a burst worker never stops (see
``test_burst_worker_stops_when_queue_is_empty``). Every burst worker still sweeps once at startup,
and the tests enqueue ``sweep`` jobs themselves where a retry has to be found.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from sqlalchemy import func, select

from metagov import signing
from metagov.app import create_app
from metagov.config import Settings
from metagov.db.models import Delivery, Event, InboundWebhook, Process
from metagov.jobs.queue import Job
from metagov.jobs.sweeper import sweep
from metagov.jobs.worker import QUEUE_NAME, ArqQueue, build_worker, connect
from metagov.runtime import Runtime
from metagov.tenancy import service as drivers
from tests.conftest import (
    BACKENDS,
    RANDOMNESS,
    REDIS_URL,
    TEST_SECRET_KEY,
    DriverKey,
    empty_tables,
    make_community,
    make_driver,
    make_registry,
    make_settings,
)
from tests.receiver import DriverReceiver, Received

# They share one Redis database: with parallel test processes, one process runs them all.
LUCKY = "/api/internal/action/randomness.set-lucky-number"
VOTE = "/api/internal/process/randomness.delayed-stochastic-vote"
RETRY_SCHEDULE = [0.2] * 8
# In-process burst workers only: see the module docstring.
BURST_SWEEP_INTERVAL = 60.0


# --- fixtures and helpers ---------------------------------------------------------------------


# Workers run against PostgreSQL only (SQLite has one writer and no SKIP LOCKED). A developer who
# leaves PostgreSQL out of METAGOV_TEST_BACKENDS leaves these out too; CI always runs both.
@pytest.fixture(params=[b for b in BACKENDS if b == "postgresql"])
async def pg_url(request: pytest.FixtureRequest, database_urls: dict[str, str]) -> str:
    """The session's PostgreSQL database, emptied (as conftest's ``database_url`` does)."""
    url = database_urls[str(request.param)]
    await empty_tables(url)
    return url


@pytest.fixture
async def redis_db() -> AsyncIterator[aioredis.Redis]:
    """The tests' own Redis database, empty at the start and at the end of each test."""
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


def worker_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "jobs_in_process": False,
        "delivery_retry_schedule": RETRY_SCHEDULE,
        "delivery_lease_seconds": 5,
        "delivery_timeout_seconds": 5,
        "sweep_interval_seconds": 1,
        **overrides,
    }
    return make_settings(url, **values)


@dataclass
class Gateway:
    """The app with its lifespan (so the API rings doorbells through Redis), a client on it and a
    Redis pool for enqueuing jobs by hand."""

    settings: Settings
    runtime: Runtime
    client: httpx.AsyncClient
    pool: ArqRedis


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings, make_registry())
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        assert isinstance(runtime.queue, ArqQueue), "the API must enqueue to Redis"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Gateway(settings, runtime, client, runtime.queue.pool)


async def run_burst(settings: Settings, *, within: float = 15.0) -> int:
    """Run one in-process arq worker until the queue is empty; returns the jobs it completed."""
    burst = settings.model_copy(update={"sweep_interval_seconds": BURST_SWEEP_INTERVAL})
    worker = build_worker(burst, burst=True, registry=make_registry())
    try:
        async with asyncio.timeout(within):
            await worker.main()
    except TimeoutError:
        queued = await worker.pool.zrange(QUEUE_NAME, 0, -1, withscores=True)
        await _stop_jobs(worker.tasks)
        raise AssertionError(
            f"burst worker still running after {within}s; queue: {queued}"
        ) from None
    finally:
        await worker.close()
    return worker.jobs_complete


async def _stop_jobs(tasks: dict[str, asyncio.Task[Any]]) -> None:
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    tasks.clear()


async def point_driver_at(runtime: Runtime, name: str, url: str) -> None:
    async with runtime.unit_of_work() as session:
        driver = await drivers.get_driver(session, name)
        await drivers.set_event_url(session, driver, url)


async def emit_lucky_numbers(gw: Gateway, driver: DriverKey, numbers: range) -> None:
    for number in numbers:
        response = await gw.client.post(
            LUCKY, json={"parameters": {"number": number}}, headers=driver.to("commons")
        )
        assert response.status_code == 200, response.text


def hmac_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks ``v1`` signature, computed without the app's signing module."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.split("whsec_", 1)[1])
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def assert_signed(secret: str, request: Received) -> None:
    headers = request.headers
    assert signing.verify_standard(secret, headers, request.body) == headers["webhook-id"]
    expected = hmac_signature(
        secret, headers["webhook-id"], headers["webhook-timestamp"], request.body
    )
    assert expected in headers["webhook-signature"].split(), headers


async def deliveries_of(runtime: Runtime) -> list[Delivery]:
    async with runtime.db.snapshot() as session:
        return list((await session.scalars(select(Delivery).order_by(Delivery.seq))).all())


@contextmanager
def log_file(path: Path) -> Iterator[IO[bytes]]:
    with path.open("wb") as handle:
        yield handle


@asynccontextmanager
async def worker_process(url: str, log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m metagov worker`` as a real process (killed on exit if still running)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAGOV_")}
    env.update(
        METAGOV_DATABASE_URL=url,
        METAGOV_REDIS_URL=REDIS_URL,
        METAGOV_SECRET_KEYS=TEST_SECRET_KEY,
        METAGOV_DELIVERY_LEASE_SECONDS="2",
        METAGOV_SWEEP_INTERVAL_SECONDS="1",
        METAGOV_JOBS_IN_PROCESS="false",
        METAGOV_DELIVERY_RETRY_SCHEDULE=",".join(map(str, RETRY_SCHEDULE)),
        METAGOV_DELIVERY_TIMEOUT_SECONDS="30",
    )
    with log_file(log_path) as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "metagov",
            "worker",
            env=env,
            cwd=log_path.parent,  # no stray .env is read
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the tests --------------------------------------------------------------------------------


async def test_driver_outage_then_recovery(pg_url: str, redis_db: aioredis.Redis) -> None:
    """A Driver down for three attempts gets all ten events, in order, each signed, with a
    ``webhook-id`` that stays the same across the retries of one event."""
    settings = worker_settings(pg_url)
    receiver = DriverReceiver(failures=3, fail_with=503)
    async with receiver.running(), gateway(settings) as gw:
        alice = await make_driver(gw.runtime, "alice")
        await point_driver_at(gw.runtime, "alice", receiver.url)
        await make_community(gw.client, alice, "commons", [RANDOMNESS])
        await emit_lucky_numbers(gw, alice, range(1, 11))
        assert receiver.attempts == 0, "no worker runs yet: nothing may have been sent"
        queued = await redis_db.zrange(QUEUE_NAME, 0, -1)
        assert len(queued) == 1, "one community's events to one Driver: one doorbell, waiting"

        deadline = time.monotonic() + 25
        rounds = 0
        while len(receiver.delivered) < 10:
            if time.monotonic() > deadline:
                rows = [(d.seq, d.status, d.attempts) for d in await deliveries_of(gw.runtime)]
                pytest.fail(f"{len(receiver.delivered)} of 10 delivered in {rounds} rounds: {rows}")
            rounds += 1
            # A sweep due after the retry delay: the burst worker waits for it, so no sleep.
            await gw.pool.enqueue_job("sweep", _job_id=f"test-sweep:{rounds}", _defer_by=0.3)
            await run_burst(settings)

        delivered = receiver.delivered
        bodies = [r.json() for r in delivered]
        assert [b["data"]["number"] for b in bodies] == list(range(1, 11))
        assert {b["event_type"] for b in bodies} == {"lucky_number_changed"}
        seqs = [b["seq"] for b in bodies]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10, seqs
        ids = [r.headers["webhook-id"] for r in delivered]
        assert ids == [b["id"] for b in bodies]
        assert len(set(ids)) == 10

        failed = [r for r in receiver.received if r.status == 503]
        assert len(failed) == 3
        assert receiver.received[:4] == [*failed, delivered[0]], "only the head is retried"
        assert {r.headers["webhook-id"] for r in failed} == {ids[0]}
        assert len(receiver.received) == 13, "no event is delivered twice"
        for request in receiver.received:
            assert_signed(alice.webhook_secret, request)

        rows = await deliveries_of(gw.runtime)
        assert [(r.status, r.attempts) for r in rows] == [("succeeded", 4)] + [("succeeded", 1)] * 9


async def test_flushall_loses_nothing(pg_url: str, redis_db: aioredis.Redis) -> None:
    """Every queued job is dropped from Redis; the sweep finds all the deliveries again."""
    settings = worker_settings(pg_url)
    receiver = DriverReceiver()
    async with receiver.running(), gateway(settings) as gw:
        alice = await make_driver(gw.runtime, "alice")
        await point_driver_at(gw.runtime, "alice", receiver.url)
        await make_community(gw.client, alice, "commons", [RANDOMNESS])
        await emit_lucky_numbers(gw, alice, range(1, 21))
        assert await redis_db.zcard(QUEUE_NAME) == 1

        await redis_db.flushdb()
        assert await redis_db.dbsize() == 0

        await gw.pool.enqueue_job("sweep", _job_id="test-sweep")
        await run_burst(settings)
        await receiver.wait_answered(20, 5)

        numbers = [r.json()["data"]["number"] for r in receiver.delivered]
        assert numbers == list(range(1, 21))
        assert len(receiver.received) == 20
        for request in receiver.received:
            assert_signed(alice.webhook_secret, request)
        assert {d.status for d in await deliveries_of(gw.runtime)} == {"succeeded"}


async def test_worker_killed_mid_delivery(
    pg_url: str, redis_db: aioredis.Redis, tmp_path: Path
) -> None:
    """A worker SIGKILLed while the Driver holds its request: once the lease runs out, another
    worker delivers the event, with the same ``webhook-id``."""
    settings = worker_settings(pg_url, delivery_lease_seconds=2)
    hang = asyncio.Event()
    receiver = DriverReceiver(hang=hang)
    async with receiver.running(), gateway(settings) as gw:
        alice = await make_driver(gw.runtime, "alice")
        await point_driver_at(gw.runtime, "alice", receiver.url)
        await make_community(gw.client, alice, "commons", [RANDOMNESS])
        await emit_lucky_numbers(gw, alice, range(7, 8))

        first_log = tmp_path / "worker-1.log"
        async with worker_process(pg_url, first_log) as first:
            try:
                await receiver.wait_for(1, 20)
            except TimeoutError:
                pytest.fail(f"the first worker never attempted the delivery:\n{tail(first_log)}")
            first.kill()
            assert await first.wait() == -9
        hang.set()  # from now on the Driver answers (the dead worker's socket is gone)
        rows = await deliveries_of(gw.runtime)
        assert [(r.status, r.attempts) for r in rows] == [("pending", 1)]

        second_log = tmp_path / "worker-2.log"
        async with worker_process(pg_url, second_log):
            try:
                await receiver.wait_for(2, 12)
            except TimeoutError:
                rows = await deliveries_of(gw.runtime)
                keys = sorted(k.decode() for k in await redis_db.keys("*"))
                queued = await redis_db.zrange(QUEUE_NAME, 0, -1, withscores=True)
                pytest.fail(
                    "no worker retried the delivery after the first worker died; deliveries: "
                    f"{[(r.seq, r.status, r.attempts, r.lease_until) for r in rows]}\n"
                    f"redis keys: {keys}\nqueue: {queued}\n"
                    f"second worker log:\n{tail(second_log)}"
                )
            deadline = time.monotonic() + 5
            while (rows := await deliveries_of(gw.runtime))[0].status == "pending":
                assert time.monotonic() < deadline, f"never recorded:\n{tail(second_log)}"
                await asyncio.sleep(0.05)

        first_attempt, retry = receiver.received[:2]
        assert len(receiver.received) == 2
        assert retry.status == 200
        assert retry.headers["webhook-id"] == first_attempt.headers["webhook-id"]
        assert retry.json()["data"] == {"number": 7}
        assert_signed(alice.webhook_secret, retry)
        assert rows[0].status == "succeeded"
        assert rows[0].attempts >= 2


async def test_vote_closes_exactly_once_with_two_workers(
    pg_url: str, redis_db: aioredis.Redis
) -> None:
    """Two workers race for one due process through many jobs; it closes once, with one event
    and one delivery per endpoint."""
    settings = worker_settings(pg_url)
    receiver = DriverReceiver()
    async with receiver.running(), gateway(settings) as gw:
        alice = await make_driver(gw.runtime, "alice")
        await point_driver_at(gw.runtime, "alice", receiver.url)
        await make_community(gw.client, alice, "commons", [RANDOMNESS])
        callback = f"http://127.0.0.1:{receiver.port}/callback"
        started = await gw.client.post(
            VOTE,
            json={"options": ["yes", "no"], "delay_seconds": 0, "callback_url": callback},
            headers=alice.to("commons"),
        )
        assert started.status_code == 202, started.text
        process_id = started.json()["id"]

        for i in range(6):
            await gw.pool.enqueue_job("run_process", process_id, _job_id=f"test-run:{i}")
            await gw.pool.enqueue_job("sweep", _job_id=f"test-sweep:{i}")
        await asyncio.gather(run_burst(settings), run_burst(settings))
        await run_burst(settings)  # one more sweep: nothing may be sent again

        async with gw.runtime.db.snapshot() as session:
            process = await session.get_one(Process, process_id)
            assert process.status == "completed"
            assert process.outcome is not None and process.outcome["winner"] in {"yes", "no"}
            types = (
                await session.scalars(
                    select(Event.event_type).where(Event.process_id == process_id)
                )
            ).all()
        assert list(types) == ["process.completed"]

        completed = [r for r in receiver.received if r.json()["event_type"] == "process.completed"]
        assert sorted(r.path for r in completed) == ["/callback", "/events"]
        assert {r.status for r in completed} == {200}
        assert completed[0].headers["webhook-id"] == completed[1].headers["webhook-id"]
        for request in completed:
            assert request.json()["data"]["id"] == process_id
            assert_signed(alice.webhook_secret, request)


def _process_doorbells(queued: list[bytes]) -> list[bytes]:
    return [key for key in queued if key.startswith(b"run_process:")]


async def test_the_sweep_leaves_a_waiting_deadline_doorbell_alone_and_rings_a_forgotten_one(
    pg_url: str, redis_db: aioredis.Redis
) -> None:
    """A passed deadline whose own doorbell is still queued gets no second one from the sweep
    (a worker behind on a burst of deadlines is not handed each twice); once Redis forgot it,
    the sweep rings it again and the vote closes."""
    settings = worker_settings(pg_url)
    receiver = DriverReceiver()
    async with receiver.running(), gateway(settings) as gw:
        alice = await make_driver(gw.runtime, "alice")
        await point_driver_at(gw.runtime, "alice", receiver.url)
        await make_community(gw.client, alice, "commons", [RANDOMNESS])
        started = await gw.client.post(
            VOTE, json={"options": ["yes", "no"], "delay_seconds": 0}, headers=alice.to("commons")
        )
        assert started.status_code == 202, started.text
        process_id = started.json()["id"]
        own = await redis_db.zrange(QUEUE_NAME, 0, -1)
        [deadline] = _process_doorbells(own)
        assert deadline.startswith(f"run_process:{process_id}:".encode())

        await sweep(gw.runtime)
        assert await redis_db.zrange(QUEUE_NAME, 0, -1) == own

        await redis_db.flushdb()
        await sweep(gw.runtime)
        assert _process_doorbells(await redis_db.zrange(QUEUE_NAME, 0, -1)) == [deadline]
        await run_burst(settings)  # it returns once the queue is empty: delivered by then
        completed = [
            r.json()["data"]["id"]
            for r in receiver.delivered
            if r.json()["event_type"] == "process.completed"
        ]
        assert completed == [process_id]


async def test_duplicate_webhook_concurrently(pg_url: str, redis_db: aioredis.Redis) -> None:
    """The same signed webhook posted six times (five at once): all acknowledged, stored once,
    and turned into exactly one event."""
    settings = worker_settings(pg_url)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    async with gateway(settings) as gw:
        alice = await make_driver(gw.runtime, "alice")
        webhook = {"name": "webhook", "config": {"secret": secret}}
        await make_community(gw.client, alice, "commons", [webhook])

        payload = {"action": "opened", "issue": {"number": 42, "title": "Budget"}}
        body = json.dumps(payload).encode()
        msg_id = f"msg_{secrets.token_hex(8)}"
        stamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": stamp,
            "webhook-signature": hmac_signature(secret, msg_id, stamp, body),
        }

        async def post() -> httpx.Response:
            return await gw.client.post("/api/hooks/commons/webhook", content=body, headers=headers)

        answers = await asyncio.gather(*(post() for _ in range(5)))
        answers.append(await post())
        assert [r.status_code // 100 for r in answers] == [2] * 6, [r.text for r in answers]

        async with gw.runtime.db.snapshot() as session:
            stored = (await session.scalars(select(InboundWebhook))).all()
        assert len(stored) == 1
        assert stored[0].body == body

        await run_burst(settings)

        async with gw.runtime.db.snapshot() as session:
            events = (await session.scalars(select(Event))).all()
            handled = await session.scalar(
                select(func.count())
                .select_from(InboundWebhook)
                .where(InboundWebhook.status == "handled")
            )
        assert [(e.event_type, e.data) for e in events] == [("webhook", payload)]
        assert handled == 1


async def test_burst_worker_stops_when_queue_is_empty(
    pg_url: str, redis_db: aioredis.Redis
) -> None:
    """``metagov worker --burst`` promises to stop once the queue is empty, with the default
    settings (a sweep every second)."""
    settings = worker_settings(pg_url, sweep_interval_seconds=1)
    worker = build_worker(settings, burst=True, registry=make_registry())
    try:
        async with asyncio.timeout(5):
            await worker.main()
    except TimeoutError:
        queued = await worker.pool.zrange(QUEUE_NAME, 0, -1, withscores=True)
        await _stop_jobs(worker.tasks)
        pytest.fail(
            f"a burst worker on an empty queue still ran after 5 s ({worker.jobs_complete} jobs "
            f"done); queue: {queued}"
        )
    finally:
        await worker.close()


async def test_doorbells_for_one_slot_coalesce_and_none_is_lost_while_it_runs(
    redis_db: aioredis.Redis,
) -> None:
    """A thousand doorbells for one sender make one waiting job; one rung while that job runs
    queues a second to run after it (the first may already have looked for work); deferred
    doorbells keep their own ids."""
    queue = ArqQueue(await connect(REDIS_URL))
    try:
        ring = Job.of("handle_webhook", "i7", key="handle_webhook:i7:1")
        await asyncio.gather(*(queue.enqueue(ring) for _ in range(1000)))
        assert await redis_db.zrange(QUEUE_NAME, 0, -1) == [b"handle_webhook:i7"]

        await redis_db.set(in_progress_key_prefix + "handle_webhook:i7", b"1")  # a worker took it
        for _ in range(3):
            await queue.enqueue(ring)
        queued = await redis_db.zrange(QUEUE_NAME, 0, -1)
        assert sorted(queued) == [b"handle_webhook:i7", b"handle_webhook:i7~1"]

        for n in range(1, 4):  # every id of the slot running (many workers, one sender)
            await redis_db.set(in_progress_key_prefix + f"handle_webhook:i7~{n}", b"1")
        await queue.enqueue(ring)
        queued = await redis_db.zrange(QUEUE_NAME, 0, -1)
        assert len(queued) == 3 and all(q.startswith(b"handle_webhook:i7~") for q in queued[1:])

        await queue.enqueue(Job.of("run_process", 5, key="run_process:5:9", at=time.time() + 60))
        await queue.enqueue(Job.of("run_process", 5))
        assert await redis_db.zscore(QUEUE_NAME, "run_process:5:9") is not None
        assert await redis_db.zscore(QUEUE_NAME, "run_process:5") is not None
    finally:
        await queue.close()


async def test_doorbells_rung_at_once_all_reach_redis_and_failures_reach_every_caller(
    redis_db: aioredis.Redis,
) -> None:
    """Doorbells rung together share Redis round trips, yet each caller returns only once its
    own jobs are queued, and learns if they could not be."""
    queue = ArqQueue(await connect(REDIS_URL))
    try:
        jobs = [Job.of("handle_webhook", n) for n in range(60)]
        await asyncio.gather(*(queue.enqueue_many(jobs[n : n + 3]) for n in range(0, 60, 3)))
        queued = await redis_db.zrange(QUEUE_NAME, 0, -1)
        assert sorted(queued) == sorted(job.key.encode() for job in jobs)
        await queue.enqueue(jobs[0])  # already queued: not added twice
        assert await redis_db.zcard(QUEUE_NAME) == 60
    finally:
        await queue.close()

    unreachable = ArqQueue(ArqRedis(host="127.0.0.1", port=1))
    try:
        outcomes = await asyncio.gather(
            *(unreachable.enqueue(job) for job in jobs[:5]), return_exceptions=True
        )
        assert all(isinstance(o, Exception) for o in outcomes)
    finally:
        await unreachable.close()
