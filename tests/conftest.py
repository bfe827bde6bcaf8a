"""Shared fixtures: real databases (SQLite and PostgreSQL), the app with its lifespan, an HTTP
client on it, and Drivers with keys.

Each backend gets one freshly migrated database per test session; tables are emptied between
tests. ``METAGOV_TEST_BACKENDS`` (default ``sqlite,postgresql``) picks the backends; PostgreSQL is
expected at ``METAGOV_TEST_PG_URL`` and its absence is an error, never a silent skip.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url

from metagov.app import create_app
from metagov.config import Settings
from metagov.crypto import generate_key
from metagov.db import migrate
from metagov.db.base import Base
from metagov.db.engine import create_engine
from metagov.jobs.queue import Job, JobQueue, LocalQueue, NullQueue
from metagov.jobs.sweeper import run_job
from metagov.plugins.registry import PluginRegistry
from metagov.runtime import Runtime
from metagov.tenancy import service as drivers
from tests.fakes import FAKE_PLUGINS

PG_URL = os.environ.get("METAGOV_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def _redis_url() -> str:
    """The Redis database tests may empty: ``METAGOV_TEST_REDIS_URL``'s (database 5 unless it
    names another), one further per pytest-xdist worker, so that tests running side by side
    never empty or read each other's queue."""
    base = os.environ.get("METAGOV_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
    server, _, number = base.rpartition("/")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return f"{server}/{int(number or 0) + int(worker or 0)}"


REDIS_URL = _redis_url()

BACKENDS = [
    b.strip() for b in os.environ.get("METAGOV_TEST_BACKENDS", "sqlite,postgresql").split(",")
]
TEST_SECRET_KEY = generate_key()


def _admin(sql: str) -> None:
    """Run one statement on the PostgreSQL server's maintenance database."""
    import asyncpg

    admin = make_url(PG_URL)

    async def run() -> None:
        conn = await asyncpg.connect(
            host=admin.host, port=admin.port, user=admin.username, database=admin.database
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def create_pg_database() -> str:
    """A new, empty PostgreSQL database for this test session; returns its URL."""
    name = f"metagov_test_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One migrated database per backend, for the whole test session."""
    urls: dict[str, str] = {}
    if "sqlite" in BACKENDS:
        path = tmp_path_factory.mktemp("db") / "metagov.db"
        urls["sqlite"] = f"sqlite+aiosqlite:///{path}"
    if "postgresql" in BACKENDS:
        urls["postgresql"] = create_pg_database()
    for url in urls.values():
        asyncio.run(migrate.upgrade(url))
    yield urls
    if "postgresql" in urls:
        drop_pg_database(urls["postgresql"])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def empty_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(table.delete())
    finally:
        await engine.dispose()


@pytest.fixture
async def database_url(backend: str, database_urls: dict[str, str]) -> AsyncIterator[str]:
    url = database_urls[backend]
    await empty_tables(url)
    yield url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "auto_migrate": False,
        "jobs_in_process": False,
        "secret_keys": TEST_SECRET_KEY,
        "driver_api_key": None,
        # Tests that send many refused requests from one address would trip the limits;
        # tests/api/test_ratelimits.py turns them on.
        "rate_limit_driver": "off",
        "rate_limit_hooks": "off",
        "rate_limit_public": "off",
        "rate_limit_auth_failures": "off",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@functools.cache
def _discovered() -> PluginRegistry:
    registry = PluginRegistry.discover()
    for plugin_cls in FAKE_PLUGINS:
        registry.add(plugin_cls, source="tests")
    return registry


def make_registry() -> PluginRegistry:
    """The built-in plugins and the test plugins, found once per test session; each test gets
    its own registry (which it may add to) holding the same plugin objects, so the app's routes
    for them are built once too."""
    found = _discovered()
    return PluginRegistry(plugins=dict(found.plugins), failures=dict(found.failures))


class PluggableQueue:
    """The test app's job queue: it rings nowhere (a test decides when jobs run) until a test
    plugs in a queue of its own with :func:`plug_queue`."""

    def __init__(self) -> None:
        self.inner: JobQueue = NullQueue()

    async def enqueue(self, job: Job) -> None:
        await self.inner.enqueue(job)

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        await self.inner.enqueue_many(jobs)

    async def close(self) -> None:
        await self.inner.close()


def plug_queue(runtime: Runtime, queue: JobQueue) -> None:
    """Send the jobs the app rings from now on to ``queue``."""
    assert isinstance(runtime.queue, PluggableQueue)
    runtime.queue.inner = queue


def running_queue(runtime: Runtime) -> LocalQueue:
    """An in-process queue that runs the jobs rung into it, as the embedded mode does."""
    queue = LocalQueue()
    queue.start(lambda job: run_job(runtime, job))
    return queue


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings, make_registry(), queue=PluggableQueue())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    rt: Runtime = app.state.runtime
    return rt


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class DriverKey:
    name: str
    key: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def to(self, community: str) -> dict[str, str]:
        """Headers for a community-scoped request."""
        return {**self.headers, "X-Metagov-Community": community}


async def make_driver(runtime: Runtime, name: str) -> DriverKey:
    async with runtime.unit_of_work() as session:
        new = await drivers.create_driver(session, runtime.secrets, name)
    return DriverKey(name, new.api_key, new.webhook_secret)


@pytest.fixture
async def alice(runtime: Runtime) -> DriverKey:
    return await make_driver(runtime, "alice")


@pytest.fixture
async def bob(runtime: Runtime) -> DriverKey:
    return await make_driver(runtime, "bob")


async def make_community(
    client: httpx.AsyncClient,
    driver: DriverKey,
    slug: str = "commons",
    plugins: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        "/api/internal/community",
        json={"slug": slug, "readable_name": slug.title(), "plugins": plugins or []},
        headers=driver.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


RANDOMNESS = {"name": "randomness", "config": {"default_low": 1, "default_high": 6}}


@pytest.fixture
async def community(client: httpx.AsyncClient, alice: DriverKey) -> dict[str, Any]:
    """Alice's community ``commons`` with randomness enabled."""
    return await make_community(client, alice, "commons", [RANDOMNESS])


async def count_rows(runtime: Runtime, table: str) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608
