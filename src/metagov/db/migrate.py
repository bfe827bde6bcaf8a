"""Schema migrations driven from Python, so ``metagov serve`` and ``metagov db`` share one path."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from metagov.db.engine import create_engine


def migrations_dir() -> Path:
    """Where the migration scripts are: inside an installed wheel, or at the checkout's root."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    if (packaged / "env.py").exists():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    raise RuntimeError("migration scripts not found; reinstall metagov")


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


@lru_cache(maxsize=1)
def _cached_head() -> str | None:
    return head_revision()


async def schema_is_current(engine: AsyncEngine) -> bool:
    """Cheap check for readiness probes: one query, no migration machinery."""
    async with engine.connect() as conn:
        try:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        except DBAPIError:
            return False
    return [row[0] for row in rows] == [_cached_head()]


def _run(database_url: str, action: str, revision: str) -> None:
    cfg = alembic_config(database_url)
    getattr(command, action)(cfg, revision)


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Alembic runs its own event loop, so it gets a thread."""
    await asyncio.to_thread(_run, database_url, "upgrade", revision)


async def downgrade(database_url: str, revision: str) -> None:
    await asyncio.to_thread(_run, database_url, "downgrade", revision)


async def is_at_head(database_url: str) -> bool:
    engine = create_engine(database_url)
    try:
        return await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
