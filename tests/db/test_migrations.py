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
