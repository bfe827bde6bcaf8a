"""The console and the API docs in a real browser: Debian's headless Chromium, driven by
Playwright, against a gateway serving on a loopback port with its jobs running in-process, and a
loopback Driver receiving its events. Every request the browser makes to a host other than
loopback is blocked and fails the test, so the pages are proven to need nothing from the internet.

``METAGOV_CONSOLE_SCREENSHOTS=docs/images`` saves the screenshots shown in docs/console.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright, expect
from sqlalchemy import select

from metagov.app import create_app
from metagov.db.models import Delivery, Process
from metagov.runtime import Runtime
from metagov.tenancy import service as tenancy
from tests.conftest import make_registry, make_settings
from tests.console.conftest import OPERATOR, PASSWORD, create_operator
from tests.receiver import DriverReceiver

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Names never resolve: nothing but an IP literal (our loopback servers) can be reached.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SCREENSHOTS = os.environ.get("METAGOV_CONSOLE_SCREENSHOTS")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    """Wait until ``check`` holds: for work the gateway's own jobs finish in the background,
    which signal nothing a test could await."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 (the database signals nothing to await)
            await asyncio.sleep(0.05)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port (lifespan included); its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws="none")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()  # a failed start raises here
        return server.started

    try:
        await eventually(started)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Live:
    """A gateway serving on loopback, its runtime, and the Driver receiving its events."""

    url: str
    runtime: Runtime
    receiver: DriverReceiver
    blocked: list[str] = field(default_factory=list)


@asynccontextmanager
async def live_gateway(database_url: str, **settings: Any) -> AsyncIterator[Live]:
    app = create_app(make_settings(database_url, **settings), make_registry())
    # The Driver fails the first two attempts: with one retry, the first event's delivery dies.
    async with DriverReceiver(failures=2, fail_with=500).running() as receiver, serving(app) as url:
        yield Live(url, app.state.runtime, receiver)


@pytest.fixture
async def live(database_url: str) -> AsyncIterator[Live]:
    """A gateway running its jobs, on each database."""
    async with live_gateway(
        database_url,
        jobs_in_process=True,
        sweep_interval_seconds=0.1,
        delivery_retry_schedule=[0.05],
    ) as found:
        yield found


@pytest.fixture
async def docs_gateway(tmp_path: Path) -> AsyncIterator[Live]:
    """A gateway for pages that read no table (the API docs): one database is enough."""
    async with live_gateway(f"sqlite+aiosqlite:///{tmp_path}/docs.db", auto_migrate=True) as found:
        yield found


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def loopback_only(browser: Browser, live: Live) -> BrowserContext:
    """A browser context that blocks (and records) every request to a non-loopback host."""
    context = await browser.new_context(viewport={"width": 1360, "height": 900})

    async def guard(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK:
            await route.continue_()
        else:
            live.blocked.append(url)
            await route.abort()

    # Only network URLs: routing a page's own blob: URLs (ReDoc's worker) would stall them.
    await context.route(re.compile(r"^(https?|wss?|ftp)://"), guard)
    return context


async def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:  # Playwright creates the folder
        await page.screenshot(path=os.path.join(SCREENSHOTS, name), full_page=True)


async def seed(live: Live) -> tuple[int, int]:
    """An operator, a Driver with a community, a dead delivery and an open process; returns
    (dead delivery id, process id)."""
    runtime = live.runtime
    await create_operator(runtime)
    async with runtime.unit_of_work() as session:
        new = await tenancy.create_driver(
            session, runtime.secrets, "acme", event_url=live.receiver.url
        )
    headers = {"Authorization": f"Bearer {new.api_key}", "X-Metagov-Community": "town-hall"}
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        response = await client.post(
            "/api/internal/community",
            json={
                "slug": "town-hall",
                "readable_name": "Town Hall",
                "plugins": [{"name": "randomness", "config": {}}],
            },
            headers=headers,
        )
        assert response.status_code == 201, response.text
        response = await client.post(
            "/api/internal/action/randomness.set-lucky-number",
            json={"parameters": {"number": 7}},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        response = await client.post(
            "/api/internal/process/randomness.delayed-stochastic-vote",
            json={"options": ["pizza", "tacos"], "delay_seconds": 3600},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        process_id = int(response.json()["id"])

    async def dead() -> bool:
        async with runtime.db.snapshot() as session:
            found = (await session.scalars(select(Delivery))).all()
        return len(found) == 1 and found[0].status == "dead"

    await live.receiver.wait_answered(2)
    await eventually(dead)
    async with runtime.db.snapshot() as session:
        delivery = (await session.scalars(select(Delivery))).one()
    # Later events go through: the plots and the latency have something to show.
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        for number in range(4):
            response = await client.post(
                "/api/internal/action/randomness.set-lucky-number",
                json={"parameters": {"number": number}},
                headers=headers,
            )
            assert response.status_code == 200, response.text
    await live.receiver.wait_answered(2 + 4)
    return delivery.id, process_id


async def test_an_operator_replays_a_dead_delivery_and_closes_a_process(
    live: Live, browser: Browser
) -> None:
    delivery_id, process_id = await seed(live)
    context = await loopback_only(browser, live)
    page = await context.new_page()

    # Signing in: the console sends a visitor without a session to the sign-in page.
    await page.goto(f"{live.url}/console")
    assert urlsplit(page.url).path == "/console/sign-in"
    await page.fill("input[name=name]", OPERATOR)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("form button[type=submit]")
    await page.wait_for_url(f"{live.url}/console")

    # The overview plots the Driver's events.
    await expect(page.locator("h1")).to_have_text("Overview")
    driver = page.locator("section.driver", has_text="acme")
    await expect(driver.locator("svg.chart")).to_have_count(2)
    heights = await driver.locator("svg.chart rect.bar").evaluate_all(
        "bars => bars.map(b => parseFloat(b.getAttribute('height')))"
    )
    assert heights and max(heights) > 0, "no bar is drawn for the event recorded"
    await expect(driver.locator(".stats")).to_contain_text("Dead 1")
    await expect(driver.locator("figcaption").first).to_contain_text("5 recorded, 4 delivered")
    await screenshot(page, "console-overview.png")

    # The dead delivery, its failed attempts, and a replay the Driver receives.
    await page.click("nav >> text=Deliveries")
    await expect(page.locator("table.list tbody tr")).to_have_count(5)
    await screenshot(page, "console-deliveries.png")
    await page.select_option("select[name=status]", "dead")
    await page.click("form.filters button[type=submit]")
    row = page.locator(f"#delivery-{delivery_id}")
    await expect(row).to_contain_text("dead")
    await row.locator(f"a[href='/console/deliveries/{delivery_id}']").click()
    attempts = page.locator("table.list tbody tr")
    await expect(attempts).to_have_count(2)
    await expect(attempts.first).to_contain_text("500")
    await page.go_back()
    await page.locator(f"#delivery-{delivery_id} button[name=only]").click()
    await expect(page.locator(".flash")).to_have_text("1 delivery queued to be sent again.")
    await live.receiver.wait_answered(7)
    replayed = live.receiver.received[6]
    assert replayed.status == 200
    assert replayed.json()["data"] == {"number": 7}
    assert replayed.headers["webhook-id"] == live.receiver.received[0].headers["webhook-id"]

    # Closing the process early, as the Driver's DELETE would.
    await page.click("nav >> text=Processes")
    await page.locator(f"#process-{process_id} button", has_text="Close now").click()
    await expect(page.locator(".flash")).to_have_text(f"Process {process_id} closed.")
    await expect(page.locator(f"#process-{process_id}")).to_contain_text("completed")
    async with live.runtime.db.snapshot() as session:
        process = await session.get_one(Process, process_id)
    assert process.status == "completed"
    await live.receiver.wait_answered(8)
    assert live.receiver.received[7].json()["event_type"] == "process.completed"

    # Both repairs are in the audit log, under the operator's name.
    await page.click("nav >> text=Audit log")
    log = page.locator("table.list tbody")
    await expect(log).to_contain_text("deliveries.replayed")
    await expect(log).to_contain_text("process.closed")
    await expect(log.locator("tr").first).to_contain_text(OPERATOR)

    # Signing out ends the session.
    await page.click("header button:has-text('Sign out')")
    await page.wait_for_url(f"{live.url}/console/sign-in")
    await expect(page.locator(".flash")).to_have_text("Signed out.")
    await page.goto(f"{live.url}/console/deliveries")
    assert urlsplit(page.url).path == "/console/sign-in"
    assert live.blocked == []
    await context.close()


async def test_docs_and_redoc_render_their_operations_offline(
    docs_gateway: Live, browser: Browser
) -> None:
    live = docs_gateway
    context = await loopback_only(browser, live)
    page = await context.new_page()
    await page.goto(f"{live.url}/docs")
    operations = page.locator(".opblock")
    await expect(operations.first).to_be_visible(timeout=60_000)
    assert await operations.count() > 10
    await expect(page.locator(".swagger-ui")).to_contain_text("/api/internal/events")

    await page.goto(f"{live.url}/redoc")
    operation = page.locator("[data-section-id='operation/events.list']")
    await expect(operation).to_be_attached(timeout=60_000)
    await expect(page.locator("body")).to_contain_text("/api/internal/events")
    assert live.blocked == []
    await context.close()
