"""What one stored webhook costs in the database layer, against raw asyncpg in the same run.

``python -m bench.statements [--pg DSN] [-n 3000]`` creates a scratch database, migrates it, and
stores ``n`` inbox rows each way, one at a time on a pooled connection, printing the CPU time
per row of this process (PostgreSQL's own time is not counted):

- ``gateway``: what the webhook route runs (``metagov.inbox.repository``) once it knows the
  instance: one prebuilt SQLAlchemy Core ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``
  that stores the webhook only if the instance is still current, in autocommit;
- ``lookup + insert``: the shape the route had before, a transaction with the joined instance
  lookup and a plain ``INSERT … ON CONFLICT DO NOTHING RETURNING``;
- ``raw asyncpg``: a plain ``INSERT`` as SQL text on the asyncpg connection underneath
  SQLAlchemy's pool (the baseline of W1 runs exactly this), in autocommit.

It runs in a single process with nothing else going on, so its figures are steadier than W1's
and say how much of W1's gap is the database layer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from metagov.db import migrate
from metagov.db.base import utcnow
from metagov.db.engine import single_statement
from metagov.db.models import Community, Driver, PluginInstance
from metagov.inbox import repository
from metagov.inbox.repository import Target

RAW_INSERT = """
INSERT INTO inbound_webhooks
    (plugin_name, dedupe_key, community_id, plugin_instance_id, community_platform_id, sender,
     headers, query, body, status, attempts, next_attempt_at, received_at)
VALUES ('webhook', $1, NULL, NULL, NULL, 'pbench:', $2::json, '{}'::json, $3, 'pending', 0, $4,
        $4)
ON CONFLICT (plugin_name, dedupe_key) DO NOTHING
RETURNING id
"""
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1", "webhook-timestamp": "1"}
BODY = b"x" * 500


def _values(n: int) -> dict[str, Any]:
    now = utcnow()
    return {
        "plugin_name": "webhook",
        "dedupe_key": f"bench:{n}:{uuid.uuid4().hex}",
        "community_id": None,
        "plugin_instance_id": None,
        "community_platform_id": None,
        "sender": "pbench:",
        "headers": HEADERS,
        "query": {},
        "body": BODY,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }


async def _instance(engine: AsyncEngine) -> Target:
    """A community with one ``webhook`` instance, for the gateway's statement to store against."""
    async with AsyncSession(engine) as session, session.begin():
        driver = Driver(name="bench", api_key_hash="x" * 64)
        session.add(driver)
        await session.flush()
        community = Community(slug="bench", driver_id=driver.id)
        session.add(community)
        await session.flush()
        session.add(PluginInstance(community_id=community.id, name="webhook"))
    async with engine.connect() as conn:
        targets = await repository.load_targets(conn, "bench", "webhook")
    assert targets
    return targets[0]


def _ways(engine: AsyncEngine, target: Target) -> dict[str, Callable[[int], Awaitable[None]]]:
    async def gateway(n: int) -> None:
        values = _values(n)
        params = {
            "dedupe": values["dedupe_key"],
            "platform_id": "",
            "sender_key": f"i{target.id}",
            "request_headers": HEADERS,
            "request_query": {},
            "request_body": BODY,
            "now": values["received_at"],
            "trace_context": None,
            "instance_id": target.id,
            "config_version": target.config_version,
            "slug": "bench",
            "instances": 1,
        }
        async with single_statement(engine) as conn:
            assert await repository.insert_for_instance(conn, params) is not None

    async def lookup_insert(n: int) -> None:
        async with engine.begin() as conn:
            await repository.load_targets(conn, "bench", "webhook")
            await repository.insert_for_tenant(conn, _values(n))

    async def raw_asyncpg(n: int) -> None:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            values = _values(n)
            await raw.fetchval(
                RAW_INSERT, values["dedupe_key"], json.dumps(HEADERS), BODY, values["received_at"]
            )

    return {"gateway": gateway, "lookup + insert": lookup_insert, "raw asyncpg": raw_asyncpg}


async def run(dsn: str, count: int) -> dict[str, float]:
    name = f"metagov_bench_stmt_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    engine = create_async_engine(url, pool_size=2)
    try:
        await migrate.upgrade(url)
        results: dict[str, float] = {}
        for label, way in _ways(engine, await _instance(engine)).items():
            for n in range(200):  # warm the statement caches and the pool
                await way(-n - 1)
            started = time.process_time()
            for n in range(count):
                await way(n)
            results[label] = 1000 * (time.process_time() - started) / count
        return results
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(run(args.pg, args.n))
    raw = results["raw asyncpg"]
    print(f"{'way':<16} {'CPU ms/row':>10} {'x raw':>7}")
    for label, cost in results.items():
        print(f"{label:<16} {cost:>10.3f} {cost / raw:>7.2f}")


if __name__ == "__main__":
    main()
