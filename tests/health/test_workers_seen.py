"""Workers' heartbeats as the API sees them: readiness, metrics and one log line when the last
worker goes; on both databases, with the API in worker mode against the local Redis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from metagov.app import create_app
from metagov.db.base import utcnow
from metagov.health import repository
from metagov.health.service import Heartbeat
from metagov.jobs.worker import ArqQueue
from metagov.runtime import Runtime
from tests.conftest import REDIS_URL, make_registry, make_settings


@pytest.fixture
async def worker_mode(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The API as it runs in worker mode: doorbells to Redis, no job run in-process."""
    settings = make_settings(database_url, redis_url=REDIS_URL, worker_heartbeat_seconds=10)
    app = create_app(settings, make_registry())
    async with app.router.lifespan_context(app):
        assert isinstance(app.state.runtime.queue, ArqQueue)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client


async def beat_at(runtime: Runtime, worker_id: str, seconds_ago: float, state: str) -> None:
    when = utcnow() - timedelta(seconds=seconds_ago)
    async with runtime.db.statement() as conn:
        await repository.beat(
            conn,
            worker_id=worker_id,
            hostname="box",
            pid=1,
            state=state,
            started_at=when,
            now=when,
        )


def metric(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_no_worker_is_reported_but_ready_by_default(
    worker_mode: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    app, client = worker_mode
    caplog.set_level(logging.INFO, logger="metagov.health.service")
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "workers": "none seen yet"}

    runtime: Runtime = app.state.runtime
    await beat_at(runtime, "gone", 95, "running")
    ready = await client.get("/readyz")
    workers = ready.json()["checks"]["workers"]
    assert workers.startswith("none seen for 9") and workers.endswith(" s"), workers
    scraped = (await client.get("/metrics")).text
    assert metric(scraped, "metagov_workers_alive") == 0
    assert 95 <= metric(scraped, "metagov_workers_unseen_seconds") < 120
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one line when the last worker is gone, not one per probe"
    assert "no worker is running" in warnings[0].getMessage()

    heartbeat = Heartbeat(runtime.db, runtime.settings, lambda: "running")
    await heartbeat.beat()
    ready = await client.get("/readyz")
    assert ready.json()["checks"]["workers"] == "ok"
    assert metric((await client.get("/metrics")).text, "metagov_workers_alive") == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "a worker is running again"
    ]

    await heartbeat.stop()
    ready = await client.get("/readyz")
    assert ready.json()["checks"]["workers"] == "none seen for 0 s", "a stopped worker is gone"


async def test_require_worker_makes_the_api_unready(database_url: str) -> None:
    settings = make_settings(database_url, redis_url=REDIS_URL, require_worker=True)
    app = create_app(settings, make_registry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["workers"] == "none seen yet"
            runtime: Runtime = app.state.runtime
            await beat_at(runtime, "slow", runtime.settings.worker_stale_seconds + 1, "running")
            assert (await client.get("/readyz")).status_code == 503, "a stale beat is no worker"
            await beat_at(runtime, "fresh", 1, "running")
            assert (await client.get("/readyz")).status_code == 200


async def test_embedded_mode_does_not_look_for_workers(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}
