"""Whether the database answers, and why not, in words: for start-up checks and ``doctor``."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from metagov.db.engine import Database


async def ping(url: str, within: float) -> None:
    """Open one connection and run one query; raises what the driver raised (TimeoutError
    after ``within`` seconds)."""
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        async with asyncio.timeout(within), db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await db.dispose()


def is_database_error(exc: BaseException) -> bool:
    """An error the driver raised (a refused login, a missing database…), as opposed to a bug."""
    return isinstance(exc, DBAPIError)


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper, whose message says it best."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc
