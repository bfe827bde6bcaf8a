"""The database: one engine per process, and the three ways the code opens it.

- :meth:`Database.transaction` — a unit of work that writes, committed on exit. On SQLite it
  starts with ``BEGIN IMMEDIATE``: SQLite has a single writer, and a deferred transaction that
  reads and then writes can fail at once with "database is locked" instead of waiting.
- :meth:`Database.snapshot` — reads that write nothing. On SQLite a deferred transaction, which in
  WAL mode never blocks a writer nor waits for one; on PostgreSQL autocommitted statements (no
  ``BEGIN``/``COMMIT`` round trips).
- :meth:`Database.statement` — one statement that is atomic by itself, autocommitted on
  PostgreSQL; SQLite keeps a write transaction, whose ``BEGIN IMMEDIATE`` queues its writers.

None of them may be held while the gateway talks to a platform or a Driver: read, call, then
write (``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

SessionFactory = async_sessionmaker[AsyncSession]
# Every error the database layer raises, for the API's error handlers.
DatabaseError = exc.SQLAlchemyError
# What a lost or unreachable database raises (a dropped connection, a server restarting, a pool
# that cannot hand out a connection in time, SQLite's lock timeout): the same request can succeed
# a moment later. Constraint violations and statement errors are bugs, and are not among them.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database could not be reached, rather than that a statement
    was wrong; after one, the pool replaces the connections it had (SQLAlchemy invalidates
    them), so the next request gets a fresh one."""
    if isinstance(error, UNAVAILABLE_ERRORS):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated


# The session type, for code above the repositories that only passes sessions along.
Session = AsyncSession
# An execution option: this connection only reads (SQLite then begins a deferred transaction).
READ_ONLY = "metagov_read_only"


# How long a SQLite writer waits for the write lock: for its turn in this process, then in
# SQLite's busy handler for another process's writer.
SQLITE_BUSY_SECONDS = 30


def create_engine(
    url: str,
    *,
    pool_size: int = 20,
    max_overflow: int = 10,
    pool_pre_ping: bool = False,
    **kwargs: Any,
) -> AsyncEngine:
    """Create the process's one engine for ``url``, with the per-backend settings that keep
    SQLite honest: WAL (readers continue while a writer works), foreign keys (off in SQLite unless
    asked for), a 30 s busy timeout, and writers queued by ``BEGIN IMMEDIATE``."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS}, **kwargs)
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


_HOLDS_TURN = "metagov_holds_writer_turn"


class WriterTurns:
    """Hands SQLite's single write lock to this process's writers in turn.

    Without it, a writer that finds the lock taken waits in SQLite's busy handler, which sleeps
    1, 2, 5, 10, 15, 20, 25, 25, 25, 50 ... ms between tries and does not wake when the lock is
    freed: under load, a webhook's acknowledgement then waits 35, 55, 80 or 130 ms for a lock
    that was free after 2. Here a writer queues on an asyncio lock before ``BEGIN IMMEDIATE``
    and is woken, in order, as soon as the writer before it has committed or rolled back and
    given its connection back. Other processes on the same file still meet SQLite's busy
    handler.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    def take(self, info: MutableMapping[Any, Any]) -> None:
        """Wait for this connection's turn (from the greenlet SQLAlchemy runs sync code in)."""
        if info.get(_HOLDS_TURN):
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # an asyncio lock belongs to one loop; so does an engine
            self._loop, self._lock = loop, asyncio.Lock()
        lock = self._lock
        try:
            await_only(asyncio.wait_for(lock.acquire(), SQLITE_BUSY_SECONDS))
        except TimeoutError:
            raise exc.OperationalError(
                "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
            ) from None
        info[_HOLDS_TURN] = lock

    def give_back(self, info: MutableMapping[Any, Any]) -> None:
        lock = info.pop(_HOLDS_TURN, None)
        if lock is not None:
            lock.release()


def _configure_sqlite(engine: AsyncEngine) -> None:
    turns = WriterTurns()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        if options.get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        turns.take(conn.info)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turns.give_back(conn.info)
            raise

    # The turn ends when the connection goes back to the pool: after its COMMIT or ROLLBACK has
    # finished (the Connection's own commit event comes before it, and a writer woken then would
    # find SQLite's lock still held), and also when a connection dropped mid-transaction is.
    @event.listens_for(engine.sync_engine.pool, "checkin")
    @event.listens_for(engine.sync_engine.pool, "invalidate")
    def _on_release(_dbapi_connection: Any, record: Any, *_: Any) -> None:
        if record is not None:
            turns.give_back(record.info)


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def single_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for work that is one statement (see :meth:`Database.statement`)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            async with conn.begin():
                yield conn


class Database:
    """The engine and the ways to open it; one per process."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        max_overflow: int = 10,
        pool_pre_ping: bool = False,
    ) -> None:
        self.engine = create_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=pool_pre_ping
        )
        self.sessions = create_session_factory(self.engine)
        autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._autocommit = create_session_factory(autocommit)
        if self.dialect == "postgresql":
            self._snapshots = self._autocommit
        else:
            self._snapshots = create_session_factory(
                self.engine.execution_options(**{READ_ONLY: True})
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed on exit (rolled back if it raises)."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only; it never holds a write lock."""
        async with self._snapshots() as session:
            yield session

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one statement that is atomic by itself."""
        async with single_statement(self.engine) as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()
