"""Helpers for testing plugins against a real gateway: the app with its lifespan, an HTTP client
on it, Drivers with keys and event URLs, and a way to run the background jobs when the test says.

    async with open_gateway(settings, registry) as gw:
        driver = await gw.create_driver("alice", event_url="https://driver.test/events")
        await gw.client.post("/api/internal/community", json=..., headers=driver.headers)
        await gw.client.post("/api/hooks/github", content=body, headers=signed)
        await gw.drain()   # handle the stored webhook, deliver its events to the Driver

Only the platform is mocked (with respx, which intercepts every outbound httpx request, the
Driver's event URL included); the database is real. Nothing here runs jobs by itself: a test
decides when with :meth:`TestGateway.drain`, so what it asserts never races a background task.
This module is the stable surface for plugin tests: it follows the core wherever its internals go.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI

from metagov.app import create_app
from metagov.config import Settings
from metagov.jobs import sweeper
from metagov.jobs.queue import Job
from metagov.plugins.registry import PluginRegistry
from metagov.processes import handlers as processes
from metagov.processes.service import due_process_ids
from metagov.runtime import Runtime
from metagov.tenancy import service as tenancy

__all__ = ["DriverCredentials", "TestGateway", "open_gateway"]


@dataclass(frozen=True)
class DriverCredentials:
    """A Driver's name, API key and event signing secret (``whsec_…``)."""

    name: str
    api_key: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def to(self, community: str) -> dict[str, str]:
        """Headers of a request about ``community``."""
        return {**self.headers, "X-Metagov-Community": community}


@dataclass
class _CollectingQueue:
    """Keeps the doorbells rung during the test; :meth:`TestGateway.drain` runs them."""

    jobs: list[Job] = field(default_factory=list)

    async def enqueue(self, job: Job) -> None:
        self.jobs.append(job)

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        self.jobs.extend(jobs)

    async def close(self) -> None:
        return None


@dataclass
class TestGateway:
    """A running gateway for one test."""

    __test__ = False  # not a pytest test class

    app: FastAPI
    runtime: Runtime
    client: httpx.AsyncClient
    _queue: _CollectingQueue

    async def create_driver(self, name: str, *, event_url: str | None = None) -> DriverCredentials:
        """A new Driver; with ``event_url``, its events are POSTed there (mock it with respx)."""
        async with self.runtime.unit_of_work() as session:
            new = await tenancy.create_driver(
                session, self.runtime.secrets, name, event_url=event_url
            )
        return DriverCredentials(name, new.api_key, new.webhook_secret)

    async def create_community(
        self, driver: DriverCredentials, slug: str, plugins: Sequence[dict[str, Any]] = ()
    ) -> dict[str, Any]:
        """Create ``slug`` with ``plugins`` (``[{"name": ..., "config": {...}}]``); asserts 201."""
        response = await self.client.post(
            "/api/internal/community",
            json={"slug": slug, "plugins": list(plugins)},
            headers=driver.headers,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def start_install(
        self,
        driver: DriverCredentials,
        plugin: str,
        community: str,
        *,
        redirect_uri: str,
        state: str | None = None,
        kind: str = "app",
        metagov_id: str | None = None,
    ) -> httpx.Response:
        """Start an OAuth install the way a Driver and a browser do (see :func:`start_install`)."""
        return await start_install(
            self.client,
            driver.to(community),
            plugin,
            redirect_uri=redirect_uri,
            state=state,
            kind=kind,
            metagov_id=metagov_id,
        )

    async def drain(self, *, now: datetime | None = None, max_rounds: int = 50) -> int:
        """Run every job that is due, as workers would, until none is left; returns how many ran.

        That handles stored webhooks, runs due periodic tasks, attempts due deliveries to
        Drivers and closes or updates due processes. ``now`` moves the clock forward for process
        deadlines and updates only (``closing_at``, ``update_interval``), so a test need not
        wait for them.
        """
        ran = 0
        clock = now
        for _ in range(max_rounds):
            due, _ = await sweeper.due_jobs(self.runtime)
            jobs = [*self._queue.jobs, *due]
            self._queue.jobs.clear()
            closing, updating = await due_process_ids(self.runtime, now=clock)
            for process_id in dict.fromkeys([*closing, *updating]):
                ran += await processes.run_due_process(self.runtime, process_id, now=clock)
            # The test's clock applies once: an update hook reschedules itself from it, and would
            # otherwise be due again at every round.
            clock = None
            worked = False
            for job in {job.key: job for job in jobs}.values():
                if job.name in ("run_process", "sweep"):
                    continue  # processes run above
                await sweeper.run_job(self.runtime, job)
                worked = True
                ran += 1
            if not worked and not self._queue.jobs:
                return ran
        raise AssertionError(f"jobs were still due after {max_rounds} rounds")


async def start_install(
    client: httpx.AsyncClient,
    headers: Mapping[str, str],
    plugin: str,
    *,
    redirect_uri: str,
    state: str | None = None,
    kind: str = "app",
    metagov_id: str | None = None,
) -> httpx.Response:
    """Start an OAuth install as it happens for real: the Driver (``headers``: its key and the
    community) asks for an install URL, and a browser opens it. Returns the browser's answer (a
    302 to the platform), or the Driver's if the gateway refused to make a URL. ``metagov_id``
    names the person a ``user`` login links the account to."""
    body: dict[str, str | None] = {"redirect_uri": redirect_uri, "state": state, "type": kind}
    if metagov_id is not None:
        body["metagov_id"] = metagov_id
    made = await client.post(
        f"/api/internal/oauth/{plugin}/authorize", json=body, headers=dict(headers)
    )
    if made.status_code != 200:
        return made
    url = httpx.URL(made.json()["url"])
    return await client.get(url.raw_path.decode("ascii"))


@asynccontextmanager
async def open_gateway(
    settings: Settings, registry: PluginRegistry | None = None
) -> AsyncIterator[TestGateway]:
    """Run the gateway for ``settings`` (its lifespan included) with no background jobs; the
    client's base URL is ``settings.base_url``."""
    queue = _CollectingQueue()
    app = create_app(settings, registry, queue=queue)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client:
            yield TestGateway(app, runtime, client, queue)
