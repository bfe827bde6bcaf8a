"""Drivers and their API keys. Only a SHA-256 hash of a key is stored; keys carry 256 random bits,
so a fast hash is enough and lets a key be looked up by its hash."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.base import utcnow
from metagov.db.models import Driver
from metagov.errors import Conflict, NotFound

KEY_PREFIX = "mgk_"
ENV_DRIVER_NAME = "default"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_driver(
    session: AsyncSession, name: str, *, event_url: str | None = None, api_key: str | None = None
) -> tuple[Driver, str]:
    """Create a Driver and return it with its API key, which is never retrievable again."""
    if await session.scalar(select(Driver.id).where(Driver.name == name)) is not None:
        raise Conflict(f"a driver named {name!r} already exists")
    key = api_key or generate_api_key()
    driver = Driver(name=name, api_key_hash=hash_api_key(key), event_url=event_url)
    session.add(driver)
    await session.flush()
    return driver, key


async def list_drivers(session: AsyncSession) -> Sequence[Driver]:
    return (await session.scalars(select(Driver).order_by(Driver.id))).all()


async def revoke_driver(session: AsyncSession, name: str) -> Driver:
    driver = await session.scalar(select(Driver).where(Driver.name == name))
    if driver is None:
        raise NotFound(f"no driver named {name!r}")
    if driver.revoked_at is None:
        driver.revoked_at = utcnow()
    return driver


async def authenticate(session: AsyncSession, api_key: str) -> Driver | None:
    """The active Driver holding ``api_key``, or None."""
    return await session.scalar(
        select(Driver).where(
            Driver.api_key_hash == hash_api_key(api_key), Driver.revoked_at.is_(None)
        )
    )


async def ensure_env_driver(session: AsyncSession, api_key: str, event_url: str | None) -> Driver:
    """Make sure the Driver named ``default`` exists with this key (for containers and demos)."""
    key_hash = hash_api_key(api_key)
    driver = await session.scalar(select(Driver).where(Driver.name == ENV_DRIVER_NAME))
    if driver is None:
        driver = Driver(name=ENV_DRIVER_NAME, api_key_hash=key_hash, event_url=event_url)
        session.add(driver)
    else:
        driver.api_key_hash = key_hash
        driver.revoked_at = None
        if event_url is not None:
            driver.event_url = event_url
    await session.flush()
    return driver
