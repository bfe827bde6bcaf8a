"""Migrations run up, down and up again on both databases, and match the models exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from metagov.db import migrate
from metagov.db.base import Base
from metagov.db.engine import create_engine
from tests.conftest import BACKENDS, create_pg_database, drop_pg_database


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/migrations.db"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    model_tables = set(Base.metadata.tables)
    await migrate.upgrade(empty_database)
    assert model_tables <= await _tables(empty_database)
    assert await migrate.is_at_head(empty_database)

    await migrate.downgrade(empty_database, "base")
    assert not (model_tables & await _tables(empty_database))
    assert not await migrate.is_at_head(empty_database)

    await migrate.upgrade(empty_database)
    assert await migrate.is_at_head(empty_database)
    assert await _diff(empty_database) == []


async def test_0004_gives_each_tenant_one_owner_and_keys_driver_deliveries_by_endpoint(
    empty_database: str,
) -> None:
    """Data made before: two communities sharing a Slack team (the oldest keeps it), and Driver
    deliveries partitioned by URL (re-keyed by the Driver's endpoint, and back on downgrade)."""
    from sqlalchemy import text

    from metagov.outbox.repository import DRIVER_ENDPOINT, partition_of

    await migrate.upgrade(empty_database, "0003_identity")
    engine = create_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO drivers (id, name, api_key_hash, created_at) "
                    "VALUES (1, 'd', 'h', CURRENT_TIMESTAMP)"
                )
            )
            for cid in (1, 2):
                await conn.execute(
                    text(
                        "INSERT INTO communities (id, slug, readable_name, driver_id, "
                        "last_event_seq, created_at, updated_at) VALUES "
                        "(:id, :slug, '', 1, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"id": cid, "slug": f"c{cid}"},
                )
                await conn.execute(
                    text(
                        "INSERT INTO plugin_instances (id, community_id, name, "
                        "community_platform_id, config, state, created_at, updated_at) VALUES "
                        "(:id, :id, 'slack', 'T1', '{}', '{}', CURRENT_TIMESTAMP, "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"id": cid},
                )
            await conn.execute(
                text(
                    "INSERT INTO events (id, community_id, seq, source, event_type, data, "
                    "created_at) VALUES (1, 1, 1, 's', 't', '{}', CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO deliveries (event_id, community_id, driver_id, target, url, "
                    "partition, seq, status, attempts, next_attempt_at, created_at) VALUES "
                    "(1, 1, 1, 'driver', 'https://old.example/e', :p, 1, 'pending', 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"p": partition_of(1, "https://old.example/e")},
            )
        await migrate.upgrade(empty_database)
        async with engine.connect() as conn:
            owners = (
                await conn.execute(text("SELECT id, platform_tenant FROM plugin_instances"))
            ).all()
            partition = (await conn.execute(text("SELECT partition FROM deliveries"))).scalar()
        assert sorted(owners) == [(1, "T1"), (2, None)]
        assert partition == partition_of(1, DRIVER_ENDPOINT)
        await migrate.downgrade(empty_database, "0003_identity")
        async with engine.connect() as conn:
            partition = (await conn.execute(text("SELECT partition FROM deliveries"))).scalar()
        assert partition == partition_of(1, "https://old.example/e")
    finally:
        await engine.dispose()
