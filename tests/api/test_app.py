"""The gateway as a whole: health probes, authentication, body limits, settings."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from metagov.app import create_app
from metagov.config import DEVELOPMENT_SECRET_KEY, Settings
from metagov.crypto import generate_key
from metagov.runtime import Runtime
from metagov.tenancy import service as drivers
from tests.conftest import DriverKey, make_registry, make_settings


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_not_ready_when_the_database_is_not_migrated(tmp_path: Any) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path}/empty.db"), make_registry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            assert (await client.get("/healthz")).status_code == 200
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"


async def test_serve_creates_its_schema_by_itself(tmp_path: Any) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/fresh.db", auto_migrate=True)
    app = create_app(settings, make_registry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200


async def test_internal_routes_need_a_valid_key(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime
) -> None:
    missing = await client.get("/api/internal/community/x")
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await client.get("/api/internal/community/x", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = await client.get("/api/internal/community/x", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401

    async with runtime.unit_of_work() as session:
        await drivers.revoke_driver(session, "alice")
    revoked = await client.post("/api/internal/community", json={}, headers=alice.headers)
    assert revoked.status_code == 401


async def test_env_driver_is_created_at_start_up(database_url: str) -> None:
    settings = make_settings(
        database_url, driver_api_key="env-key", driver_event_url="http://127.0.0.1:9/events"
    )
    for _ in range(2):  # idempotent across restarts
        app = create_app(settings, make_registry())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                created = await client.post(
                    "/api/internal/community",
                    json={},
                    headers={"Authorization": "Bearer env-key"},
                )
                assert created.status_code == 201


async def test_oversized_bodies_get_413(
    client: httpx.AsyncClient, alice: DriverKey, database_url: str
) -> None:
    small = create_app(make_settings(database_url, max_body_bytes=100), make_registry())
    async with small.router.lifespan_context(small):
        transport = httpx.ASGITransport(app=small)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            declared = await c.post(
                "/api/internal/community",
                content=b"x" * 101,
                headers={"Content-Type": "application/json"},
            )
            assert declared.status_code == 413
            assert declared.json()["code"] == "payload_too_large"

            async def chunks() -> Any:
                for _ in range(5):
                    yield b"x" * 40

            streamed = await c.post(
                "/api/internal/community",
                content=chunks(),
                headers={**alice.headers, "Content-Type": "application/json"},
            )
            assert streamed.status_code == 413
            assert streamed.json()["code"] == "payload_too_large"


def test_production_refuses_the_development_key() -> None:
    with pytest.raises(ValidationError, match="development key"):
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="not a Fernet key"):
        Settings(_env_file=None, secret_keys="short")  # type: ignore[call-arg]
    own_key = generate_key()
    with pytest.raises(ValidationError, match="development key"):
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            environment="production",
            secret_keys=f"{own_key},{DEVELOPMENT_SECRET_KEY}",
        )
    ok = Settings(_env_file=None, environment="production", secret_keys=own_key)  # type: ignore[call-arg]
    assert [k.get_secret_value() for k in ok.secret_keys] == [own_key]


async def test_openapi_has_one_typed_operation_per_declaration(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    ops = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    assert {
        "randomness.random-int",
        "randomness.delayed-stochastic-vote",
        "echo.say.public",
    } <= set(ops)
    body = ops["randomness.random-int"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["anyOf"][0]["$ref"].endswith("RandomnessRandomIntRequest")
    ok = ops["randomness.random-int"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("RandomIntResult")
    record = ops["randomness.delayed-stochastic-vote"]["responses"]["202"]["content"]
    assert record["application/json"]["schema"]["$ref"].endswith(
        "RandomnessDelayedStochasticVoteRecord"
    )
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200


async def test_nul_characters_are_refused_at_the_door(
    client: httpx.AsyncClient, alice: DriverKey
) -> None:
    body = await client.post(
        "/api/internal/community",
        content=b'{"slug": "a", "readable_name": "x\\u0000y"}',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert body.status_code == 422
    assert body.json()["code"] == "nul_character"
    path = await client.get("/api/internal/community/a%00b", headers=alice.headers)
    assert path.status_code == 422
    query = await client.get("/api/internal/process?plugin=%00", headers=alice.headers)
    assert query.status_code == 422
    escaped = await client.post(
        "/api/internal/community",
        json={"slug": "fine", "readable_name": "a \\u0000 is just text here"},
        headers=alice.headers,
    )
    assert escaped.status_code == 201


async def drop_database_connections(runtime: Runtime) -> None:
    """Cut every connection the gateway's pool holds, as a database restart or a network
    failure does: PostgreSQL's server ends them; SQLite's are closed under the pool."""
    if runtime.db.dialect == "postgresql":
        async with runtime.db.engine.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        return
    async with AsyncExitStack() as stack:
        for _ in range(runtime.db.engine.pool.checkedin()):
            conn = await stack.enter_async_context(runtime.db.engine.connect())
            raw = await conn.get_raw_connection()
            await raw.driver_connection.close()


async def test_a_dropped_database_connection_is_a_503_and_the_next_request_succeeds(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime, community: dict[str, Any]
) -> None:
    for request in (
        lambda: client.get("/api/internal/community/commons", headers=alice.headers),
        lambda: client.post(
            "/api/internal/action/randomness.random-int", headers=alice.to("commons")
        ),
    ):
        # Open several connections first, so the pool holds more than the one request needs.
        await asyncio.gather(*(client.get("/readyz") for _ in range(4)))
        await drop_database_connections(runtime)
        failed = await request()
        assert failed.status_code == 503, failed.text
        assert failed.json() == {
            "detail": "the database is unavailable; retry shortly",
            "code": "database_unavailable",
        }
        assert failed.headers["retry-after"] == "1"
        again = await request()
        assert again.status_code == 200, again.text
