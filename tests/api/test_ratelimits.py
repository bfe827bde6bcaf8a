"""Rate limits: per Driver key on the Driver's API, per client address on the routes without a
key, and per address for failed authentications; 429 with Retry-After, before anything is read or
stored. Counted in memory, or in Redis shared by every replica."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from metagov.app import create_app
from metagov.runtime import Runtime
from tests.conftest import (
    BACKENDS,
    RANDOMNESS,
    REDIS_URL,
    DriverKey,
    PluggableQueue,
    count_rows,
    make_community,
    make_driver,
    make_registry,
    make_settings,
)


@asynccontextmanager
async def gateway(database_url: str, **limits: Any) -> AsyncIterator[tuple[FastAPI, Runtime]]:
    overrides = {
        "rate_limit_driver": "off",
        "rate_limit_hooks": "off",
        "rate_limit_public": "off",
        "rate_limit_auth_failures": "off",
        **limits,
    }
    app = create_app(
        make_settings(database_url, **overrides), make_registry(), queue=PluggableQueue()
    )
    async with app.router.lifespan_context(app):
        yield app, app.state.runtime


def client_of(app: FastAPI, address: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1


async def test_each_driver_key_has_its_own_budget(database_url: str) -> None:
    async with gateway(database_url, rate_limit_driver="3/minute") as (app, runtime):
        alice, bob = await make_driver(runtime, "alice"), await make_driver(runtime, "bob")
        async with client_of(app) as client:
            for _ in range(3):
                ok = await client.get("/api/internal/plugin-schemas", headers=alice.headers)
                assert ok.status_code == 200
            assert_limited(await client.get("/api/internal/events", headers=alice.headers))
            # Another Driver, from the same address, is not held back.
            assert (await client.get("/api/internal/events", headers=bob.headers)).is_success
            # Nor are health and metrics.
            assert (await client.get("/healthz")).status_code == 200


async def test_failed_authentications_stop_an_address(database_url: str) -> None:
    async with gateway(database_url, rate_limit_auth_failures="3/minute") as (app, runtime):
        alice = await make_driver(runtime, "alice")
        async with client_of(app, "198.51.100.9") as guesser, client_of(app) as other:
            for guess in range(3):
                bad = {"Authorization": f"Bearer mgk_guess{guess}"}
                assert (await guesser.get("/api/internal/events", headers=bad)).status_code == 401
            assert_limited(await guesser.get("/api/internal/events", headers=alice.headers))
            assert (await other.get("/api/internal/events", headers=alice.headers)).is_success


async def test_unauthenticated_routes_are_limited_per_address(
    database_url: str,
) -> None:
    async with gateway(database_url, rate_limit_hooks="2/minute", rate_limit_public="2/minute") as (
        app,
        runtime,
    ):
        alice = await make_driver(runtime, "alice")
        async with client_of(app) as client, client_of(app, "192.0.2.44") as elsewhere:
            await make_community(client, alice, "commons", [RANDOMNESS])
            for _ in range(2):
                hook = await client.post("/api/hooks/commons/webhook", content=b"{}")
                assert hook.status_code == 404  # no webhook plugin there: still counted
            assert_limited(await client.post("/api/hooks/commons/webhook", content=b"{}"))
            assert (await elsewhere.post("/api/hooks/commons/webhook")).status_code == 404
            for _ in range(2):
                assert (await client.get("/auth/slack/authorize")).status_code != 429
            assert_limited(await client.get("/auth/slack/authorize"))
            assert_limited(await client.post("/api/action/randomness.random-int"))
        assert await count_rows(runtime, "inbound_webhooks") == 0


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="the shared counters need Redis")
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_replicas_share_their_counters_through_redis(database_url: str) -> None:
    limits = {"redis_url": REDIS_URL, "rate_limit_driver": "4/minute"}
    async with (
        gateway(database_url, **limits) as (one, runtime),
        gateway(database_url, **limits) as (two, _),
    ):
        alice = await make_driver(runtime, "alice")
        async with client_of(one) as first, client_of(two) as second:
            for client in (first, second, first, second):
                assert (await client.get("/api/internal/events", headers=alice.headers)).is_success
            assert_limited(await first.get("/api/internal/events", headers=alice.headers))
            assert_limited(await second.get("/api/internal/events", headers=alice.headers))


async def test_unreachable_counters_let_requests_through(database_url: str) -> None:
    """A Redis outage must not turn into dropped Driver calls."""
    limits = {"redis_url": "redis://127.0.0.1:1/0", "rate_limit_driver": "1/minute"}
    async with gateway(database_url, **limits) as (app, runtime):
        alice: DriverKey = await make_driver(runtime, "alice")
        async with client_of(app) as client:
            for _ in range(3):
                assert (await client.get("/api/internal/events", headers=alice.headers)).is_success


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="the shared counters need Redis")
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_failed_authentications_are_counted_across_replicas(database_url: str) -> None:
    """Each replica checks its own memory on every request (no round trip) and learns of the
    shared count at its next failure: at most one failure per replica gets past the limit."""
    address = f"198.51.100.{secrets.randbelow(250) + 1}"  # a window of its own in Redis
    limits = {"redis_url": REDIS_URL, "rate_limit_auth_failures": "4/minute"}
    bad = {"Authorization": "Bearer mgk_guess"}
    async with (
        gateway(database_url, **limits) as (one, runtime),
        gateway(database_url, **limits) as (two, _),
    ):
        alice = await make_driver(runtime, "alice")
        async with client_of(one, address) as first, client_of(two, address) as second:
            for client in (first, second, first, second):
                assert (await client.get("/api/internal/events", headers=bad)).status_code == 401
            assert_limited(await second.get("/api/internal/events", headers=alice.headers))
            assert (await first.get("/api/internal/events", headers=bad)).status_code == 401
            assert_limited(await first.get("/api/internal/events", headers=alice.headers))
