"""SQLite's one write lock, shared by the writers of one gateway process.

The engine queues this process's writers itself, so a writer never waits in SQLite's busy handler
(which sleeps in growing steps and does not wake when the lock is freed). With the busy timeout
set to zero, any writer that met the lock taken would fail at once with "database is locked":
these tests show none does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from metagov.db.engine import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/writers.db")

    @event.listens_for(database.engine.sync_engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE notes (writer INTEGER, step INTEGER)"))
    try:
        yield database
    finally:
        await database.dispose()


async def _write(db: Database, writer: int) -> None:
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO notes VALUES (:w, 1)"), {"w": writer})
        await asyncio.sleep(0.001)  # others try to write meanwhile
        await session.execute(text("INSERT INTO notes VALUES (:w, 2)"), {"w": writer})


async def _notes(db: Database) -> list[tuple[int, int]]:
    async with db.snapshot() as session:
        rows = await session.execute(text("SELECT writer, step FROM notes ORDER BY rowid"))
        return [(row[0], row[1]) for row in rows]


async def test_concurrent_writers_take_turns_without_database_is_locked(db: Database) -> None:
    await asyncio.gather(*(_write(db, writer) for writer in range(12)))
    notes = await _notes(db)
    assert len(notes) == 24
    # Each writer's two rows are next to each other: one writer at a time, start to commit.
    assert all(notes[i][0] == notes[i + 1][0] for i in range(0, 24, 2))


async def test_statements_and_transactions_share_the_turns(db: Database) -> None:
    async def single(writer: int) -> None:
        async with db.statement() as conn:
            await conn.execute(text("INSERT INTO notes VALUES (:w, 0)"), {"w": writer})

    await asyncio.gather(*(_write(db, w) for w in range(6)), *(single(100 + w) for w in range(6)))
    assert len(await _notes(db)) == 18


async def test_a_writer_that_fails_gives_its_turn_back(db: Database) -> None:
    async def failing() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO notes VALUES (-1, 1)"))
            await asyncio.sleep(0.001)
            raise RuntimeError("the hook failed")

    results = await asyncio.gather(
        failing(), *(_write(db, writer) for writer in range(4)), return_exceptions=True
    )
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [None] * 4
    notes = await _notes(db)
    assert (-1, 1) not in notes and len(notes) == 8
