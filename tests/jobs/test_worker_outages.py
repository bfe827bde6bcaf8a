"""A real ``metagov worker`` process against a Redis server of the test's own (started and stopped
on a port of its own, so the shared Redis is never touched): it rides out an outage, logging it
once, comes back by itself, and stops on SIGTERM with status 0 and no traceback, finishing the job
in hand. PostgreSQL only, as every worker test."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from sqlalchemy import select

from metagov.db.models import Delivery
from tests.conftest import TEST_SECRET_KEY, make_community, make_driver
from tests.jobs.test_workers import (
    LUCKY,
    RANDOMNESS,
    RETRY_SCHEDULE,
    Gateway,
    gateway,
    pg_url,  # noqa: F401 (the fixture)
    point_driver_at,
    tail,
    worker_settings,
)
from tests.receiver import DriverReceiver

# The CI machine has it, as it has PostgreSQL (see .ci/run).
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll another process until ``check`` holds (there is no event to await across processes)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)


class RedisServer:
    """A throw-away ``redis-server`` on ``port``, without persistence."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *[
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        async def answers() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(answers, 10, "redis-server listens")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 10)
        self.proc = None


@asynccontextmanager
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def worker(
    url: str, redis_url: str, log_path: Path, metrics_port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAGOV_")}
    env.update(
        METAGOV_DATABASE_URL=url,
        METAGOV_REDIS_URL=redis_url,
        METAGOV_SECRET_KEYS=TEST_SECRET_KEY,
        METAGOV_SWEEP_INTERVAL_SECONDS="1",
        METAGOV_WORKER_HEARTBEAT_SECONDS="1",
        METAGOV_DELIVERY_RETRY_SCHEDULE=",".join(map(str, RETRY_SCHEDULE)),
        METAGOV_DELIVERY_TIMEOUT_SECONDS="30",
        METAGOV_WORKER_SHUTDOWN_GRACE_SECONDS="20",
    )
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "metagov",
            "worker",
            "--metrics-port",
            str(metrics_port),
            env=env,
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class Probe:
    """The worker's own ``/readyz`` and ``/metrics``."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    async def ready(self) -> dict[str, object] | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                answer = await client.get(self.base + "/readyz")
        except httpx.HTTPError:
            return None
        body: dict[str, object] = answer.json()
        return body

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(timeout=2) as client:
            text = (await client.get(self.base + "/metrics")).text
        values = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name)]
        return values[0] if values else 0.0

    async def redis_is(self, state: str) -> bool:
        body = await self.ready()
        return body is not None and body["checks"] == {"redis": state, "worker": "ok"}  # type: ignore[index]


async def lucky(gw: Gateway, alice_headers: dict[str, str], number: int) -> None:
    response = await gw.client.post(
        LUCKY, json={"parameters": {"number": number}}, headers=alice_headers
    )
    assert response.status_code == 200, response.text


async def test_worker_rides_out_a_redis_outage(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    log_path = tmp_path / "worker.log"
    receiver = DriverReceiver()
    async with redis_server() as redis, receiver.running():
        settings = worker_settings(pg_url, redis_url=redis.url)
        async with gateway(settings) as gw:
            alice = await make_driver(gw.runtime, "alice")
            await point_driver_at(gw.runtime, "alice", receiver.url)
            await make_community(gw.client, alice, "commons", [RANDOMNESS])
            port = free_port()
            probe = Probe(port)
            async with worker(pg_url, redis.url, log_path, port) as proc:
                await eventually(lambda: probe.redis_is("ok"), 30, "the worker is ready")
                await lucky(gw, alice.to("commons"), 1)
                await receiver.wait_answered(1, 15)

                await redis.stop()
                await eventually(lambda: probe.redis_is("unavailable"), 15, "outage seen")
                api = await gw.client.get("/readyz")
                assert api.status_code == 503
                assert api.json()["checks"]["redis"] == "unavailable"
                await lucky(gw, alice.to("commons"), 2)  # the API still answers; its doorbell fails

                async def retried() -> bool:
                    return await probe.metric("metagov_redis_reconnect_attempts_total") >= 4

                await eventually(retried, 20, "the worker keeps trying")
                assert proc.returncode is None, tail(log_path)

                await redis.start()  # empty: the doorbell for event 2 is gone, the sweep finds it
                await eventually(lambda: probe.redis_is("ok"), 30, "the worker is back")
                await receiver.wait_answered(2, 15)
                assert [r.json()["data"]["number"] for r in receiver.delivered] == [1, 2]
                assert (await gw.client.get("/readyz")).json()["checks"]["redis"] == "ok"

                await redis.stop()  # and stopped while Redis is gone: still a clean exit
                await eventually(lambda: probe.redis_is("unavailable"), 15, "second outage")
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0, tail(log_path)

    log = log_path.read_text()
    assert log.count("lost Redis at METAGOV_REDIS_URL") == 2, log  # once per outage
    assert log.count("Redis is back after") == 1, log
    assert "Traceback" not in log, log


async def test_sigterm_lets_the_job_in_hand_finish(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    log_path = tmp_path / "worker.log"
    hang = asyncio.Event()
    receiver = DriverReceiver(hang=hang)
    async with redis_server() as redis, receiver.running():
        settings = worker_settings(pg_url, redis_url=redis.url)
        async with gateway(settings) as gw:
            alice = await make_driver(gw.runtime, "alice")
            await point_driver_at(gw.runtime, "alice", receiver.url)
            await make_community(gw.client, alice, "commons", [RANDOMNESS])
            port = free_port()
            async with worker(pg_url, redis.url, log_path, port) as proc:
                await lucky(gw, alice.to("commons"), 7)
                await receiver.wait_for(1, 30)  # the Driver holds the delivery's request

                proc.send_signal(signal.SIGTERM)

                async def stopping() -> bool:
                    body = await Probe(port).ready()
                    return body is not None and body["status"] == "not ready"

                await eventually(stopping, 10, "the worker says it is stopping")
                assert proc.returncode is None, "it waits for the job in hand"
                hang.set()
                assert await asyncio.wait_for(proc.wait(), 30) == 0, tail(log_path)

            async with gw.runtime.db.snapshot() as session:
                rows = (await session.scalars(select(Delivery))).all()
            assert [(d.status, d.attempts) for d in rows] == [("succeeded", 1)]
    log = log_path.read_text()
    assert "Traceback" not in log, log
    assert "shutdown on SIGTERM" in log, log
