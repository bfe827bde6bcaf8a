"""Engine and session factory, with the per-backend settings that keep SQLite honest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(
    url: str,
    *,
    pool_size: int = 20,
    max_overflow: int = 10,
    pool_pre_ping: bool = False,
    **kwargs: Any,
) -> AsyncEngine:
    """Create the process's one engine for ``url``.

    On SQLite every transaction starts with ``BEGIN IMMEDIATE``: SQLite has a single writer, and a
    deferred transaction that reads and then writes can fail at once with "database is locked"
    instead of waiting. WAL lets readers continue while a writer works; foreign keys are off in
    SQLite unless asked for.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    # Connections are recycled every half hour, below common proxy and firewall idle timeouts.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pool_pre_ping,
        pool_recycle=1800,
        **kwargs,
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def single_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for work that is one statement, which is atomic by itself.

    On PostgreSQL it autocommits: one round trip instead of three with ``BEGIN`` and ``COMMIT``,
    and on a busy path each round trip costs as much CPU as the statement. SQLite keeps the
    transaction, whose ``BEGIN IMMEDIATE`` queues its writers.
    """
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            async with conn.begin():
                yield conn
