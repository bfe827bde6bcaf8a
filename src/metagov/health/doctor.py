"""``metagov doctor``: what stands between this configuration and a working gateway, in plain
words, each with what to do about it.

It looks where an operator would, in the order they depend on each other: the settings, the
database, its schema, Redis, the workers, and the Drivers' endpoints. Each check that fails
makes the later ones that depend on it be skipped rather than fail again for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from metagov import preflight
from metagov.config import Settings
from metagov.db import migrate
from metagov.db.base import utcnow
from metagov.db.engine import Database
from metagov.health.service import worker_status
from metagov.outbox import service as outbox
from metagov.tenancy import service as tenancy

# A delivery older than this and still pending is worth a look.
OUTBOX_LAG_WARNING = timedelta(minutes=5)


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "PROBLEM"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str

    def line(self) -> str:
        return f"{self.level.value:<8} {self.check:<10} {self.message}"


def _settings(settings: Settings) -> list[Finding]:
    found = []
    mode = (
        "embedded mode (jobs run inside metagov serve)"
        if settings.runs_jobs_in_process
        else "worker mode (jobs through Redis, run by metagov worker)"
        if settings.redis_url
        else "no job runs"
    )
    found.append(Finding("settings", Level.OK, f"{settings.environment}, {mode}"))
    if not settings.runs_jobs_in_process and not settings.redis_url:
        found.append(
            Finding(
                "settings",
                Level.PROBLEM,
                "METAGOV_JOBS_IN_PROCESS=false without METAGOV_REDIS_URL: nothing is delivered, "
                "no webhook is handled, no process closes; unset it or set METAGOV_REDIS_URL",
            )
        )
    if settings.uses_development_key:
        found.append(
            Finding(
                "settings",
                Level.WARNING,
                "METAGOV_SECRET_KEYS holds the public development key: stored secrets are not "
                "protected; set your own (`metagov keys generate`)",
            )
        )
    if settings.environment == "production" and settings.is_sqlite:
        found.append(
            Finding(
                "settings",
                Level.WARNING,
                "production on SQLite: one process at a time can write; use PostgreSQL",
            )
        )
    if settings.environment == "production" and settings.base_url.startswith("http://"):
        found.append(
            Finding(
                "settings",
                Level.WARNING,
                f"METAGOV_BASE_URL is {settings.base_url}: OAuth callbacks need the public "
                "https:// URL",
            )
        )
    return found


async def _redis(settings: Settings) -> list[Finding]:
    if not settings.redis_url or settings.runs_jobs_in_process:
        return [Finding("redis", Level.OK, "not used (embedded mode)")]
    shown = preflight.shown_redis_url(settings.redis_url)
    try:
        await preflight.ping_redis(settings.redis_url)
    except Exception as exc:
        if not preflight.is_connection_failure(exc):
            raise
        return [
            Finding(
                "redis",
                Level.PROBLEM,
                f"{preflight.redis_error(settings, exc)}: requests still work but jobs wait",
            )
        ]
    return [Finding("redis", Level.OK, f"answers at {shown}")]


async def _workers(db: Database, settings: Settings) -> list[Finding]:
    if settings.runs_jobs_in_process or not settings.redis_url:
        return [Finding("workers", Level.OK, "none needed (embedded mode)")]
    async with db.snapshot() as session:
        status = await worker_status(session, settings)
    if status.alive:
        return [Finding("workers", Level.OK, f"{status.alive} running")]
    return [
        Finding(
            "workers",
            Level.PROBLEM,
            f"{status.describe()}: nothing is delivered, no webhook is handled and no process "
            "closes until a `metagov worker` runs",
        )
    ]


async def _drivers(db: Database) -> list[Finding]:
    found = []
    async with db.snapshot() as session:
        drivers = await tenancy.list_drivers(session)
        counts = await outbox.counts_by_driver(session)
        pending, oldest = await outbox.backlog(session)
    active = [d for d in drivers if d.revoked_at is None]
    if not active:
        found.append(
            Finding("drivers", Level.WARNING, "no active Driver: `metagov drivers create NAME`")
        )
    for driver in active:
        waiting = counts.get(driver.id, {})
        if driver.endpoint_disabled_at is not None:
            found.append(
                Finding(
                    "drivers",
                    Level.PROBLEM,
                    f"{driver.name}: its endpoint answered 410 Gone on "
                    f"{driver.endpoint_disabled_at:%Y-%m-%d %H:%M} UTC and receives nothing; "
                    f"{waiting.get('pending', 0)} deliveries wait. Re-enable it with "
                    f"`metagov drivers set-event-url {driver.name} URL`",
                )
            )
        elif not driver.event_url:
            found.append(
                Finding(
                    "drivers",
                    Level.OK,
                    f"{driver.name}: no event URL (events are only recorded)",
                )
            )
        else:
            found.append(Finding("drivers", Level.OK, f"{driver.name}: sending to its event URL"))
        if waiting.get("dead"):
            found.append(
                Finding(
                    "drivers",
                    Level.WARNING,
                    f"{driver.name}: {waiting['dead']} dead deliveries (given up after every "
                    "retry); `metagov deliveries list --dead`, then `metagov deliveries replay`",
                )
            )
    if oldest is not None and utcnow() - oldest > OUTBOX_LAG_WARNING:
        age = (utcnow() - oldest).total_seconds()
        found.append(
            Finding(
                "drivers",
                Level.WARNING,
                f"{pending} deliveries pending, the oldest for {age:.0f} s: a Driver is failing "
                "or no job runs",
            )
        )
    return found


async def examine(settings: Settings) -> Sequence[Finding]:
    """Every finding, in order; the checks after a failed one it depends on are skipped."""
    found = _settings(settings)
    try:
        await preflight.check_database(settings)
    except preflight.StartupError as exc:
        found.append(Finding("database", Level.PROBLEM, str(exc)))
        found.extend(await _redis(settings))
        return found
    found.append(Finding("database", Level.OK, preflight.shown_database_url(settings.database_url)))
    db = Database(settings.database_url, pool_size=1, max_overflow=0)
    try:
        current = await migrate.current_revision(db.engine)
        head = migrate.head_revision()
        if current != head:
            found.append(
                Finding(
                    "schema",
                    Level.PROBLEM,
                    f"at {current or 'nothing (empty database)'}, newest is {head}: "
                    "run `metagov db upgrade`",
                )
            )
            found.extend(await _redis(settings))
            return found
        found.append(Finding("schema", Level.OK, f"at the newest revision ({head})"))
        found.extend(await _redis(settings))
        found.extend(await _workers(db, settings))
        found.extend(await _drivers(db))
    finally:
        await db.dispose()
    return found
