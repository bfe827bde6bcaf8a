"""Start-up checks, and start-up failures told in one sentence.

A process that cannot reach its database or Redis, or finds a schema it does not know, should
say so in one line that names the setting to fix, before anything else runs: a newcomer reading
an 800-line traceback from inside uvicorn or alembic learns nothing more than that line says.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

from metagov.config import Settings
from metagov.db import probe
from metagov.db.engine import Database
from metagov.db.urls import shown_database_url

# How long a start-up check waits for a server that does not answer.
CONNECT_TIMEOUT_SECONDS = 10.0


class StartupError(Exception):
    """What stops a process from starting, as one sentence for the operator."""


__all__ = ["StartupError", "shown_database_url"]


def shown_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _reason(exc: BaseException) -> str:
    """The cause of a connection failure in a few words: a driver's message, or the OS's."""
    exc = probe.driver_error(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    said = str(exc).strip()
    return said.splitlines()[0] if said else type(exc).__name__


def database_error(settings: Settings, exc: BaseException) -> StartupError:
    return StartupError(
        f"cannot use the database at METAGOV_DATABASE_URL "
        f"({shown_database_url(settings.database_url)}): {_reason(exc)}"
    )


def redis_error(settings: Settings, exc: BaseException) -> StartupError:
    return StartupError(
        f"cannot reach Redis at METAGOV_REDIS_URL ({shown_redis_url(settings.redis_url or '')}): "
        f"{_reason(exc)}"
    )


def is_connection_failure(exc: BaseException) -> bool:
    """A server that could not be reached or refused us (as opposed to a bug)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return probe.is_database_error(exc) or isinstance(
        exc, OSError | TimeoutError | RedisConnectionError | RedisTimeoutError
    )


async def check_database(settings: Settings) -> None:
    """Open a connection and run one query; :class:`StartupError` if that fails."""
    try:
        await probe.ping(settings.database_url, CONNECT_TIMEOUT_SECONDS)
    except Exception as exc:
        if is_connection_failure(exc):
            raise database_error(settings, exc) from None
        raise


async def ping_redis(url: str) -> None:
    """One PING through a fresh connection (closed again); raises what the client raised."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            await client.ping()
    finally:
        await client.aclose()


async def check_redis(settings: Settings) -> None:
    if not settings.redis_url:
        return
    try:
        await ping_redis(settings.redis_url)
    except Exception as exc:
        if is_connection_failure(exc):
            raise redis_error(settings, exc) from None
        raise


async def check_serve(settings: Settings) -> None:
    """What ``metagov serve`` needs before it starts: its database, and Redis if it rings
    doorbells there."""
    await check_database(settings)
    if not settings.runs_jobs_in_process:
        await check_redis(settings)


async def check_worker(settings: Settings) -> None:
    """A worker needs the schema of its own version too: it never migrates, and its first job
    (or its heartbeat) would fail on a table it does not find."""
    from metagov.db import migrate

    await check_database(settings)
    await check_redis(settings)
    db = Database(settings.database_url, pool_size=1, max_overflow=0)
    try:
        current = await migrate.schema_is_current(db.engine)
    finally:
        await db.dispose()
    if not current:
        raise StartupError(
            "the database at METAGOV_DATABASE_URL is not at this version's schema: "
            "run `metagov db upgrade` first (workers never migrate)"
        )
