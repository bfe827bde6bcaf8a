"""Drivers and their API keys. Only a SHA-256 hash of a key is stored; keys carry 256 random bits,
so a fast hash is enough and lets a key be looked up by its hash."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from metagov import signing
from metagov.crypto import SecretBox
from metagov.db.base import utcnow
from metagov.db.models import Driver
from metagov.errors import Conflict, NotFound

KEY_PREFIX = "mgk_"
ENV_DRIVER_NAME = "default"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewDriver:
    """A created Driver with its credentials; this is the only time they are readable."""

    driver: Driver
    api_key: str
    webhook_secret: str


async def create_driver(
    session: AsyncSession,
    box: SecretBox,
    name: str,
    *,
    event_url: str | None = None,
    api_key: str | None = None,
) -> NewDriver:
    """Create a Driver with a new API key and a new signing secret for its events."""
    if await session.scalar(select(Driver.id).where(Driver.name == name)) is not None:
        raise Conflict(f"a driver named {name!r} already exists")
    key = api_key or generate_api_key()
    secret = signing.generate_secret()
    driver = Driver(
        name=name,
        api_key_hash=hash_api_key(key),
        event_url=event_url,
        webhook_secret=box.encrypt_text(secret),
    )
    session.add(driver)
    await session.flush()
    return NewDriver(driver, key, secret)


async def get_driver(session: AsyncSession, name: str) -> Driver:
    driver = await session.scalar(select(Driver).where(Driver.name == name))
    if driver is None:
        raise NotFound(f"no driver named {name!r}")
    return driver


async def rotate_webhook_secret(
    session: AsyncSession, box: SecretBox, driver: Driver, *, overlap: timedelta
) -> str:
    """Give the Driver a new signing secret. For ``overlap``, events carry signatures under both
    the old and the new secret, so the Driver can switch without missing a beat."""
    secret = signing.generate_secret()
    driver.previous_webhook_secret = driver.webhook_secret
    driver.previous_secret_expires_at = utcnow() + overlap
    driver.webhook_secret = box.encrypt_text(secret)
    await session.flush()
    return secret


async def set_event_url(session: AsyncSession, driver: Driver, event_url: str | None) -> None:
    driver.event_url = event_url
    await session.flush()


async def list_drivers(session: AsyncSession) -> Sequence[Driver]:
    return (await session.scalars(select(Driver).order_by(Driver.id))).all()


async def revoke_driver(session: AsyncSession, name: str) -> Driver:
    driver = await get_driver(session, name)
    if driver.revoked_at is None:
        driver.revoked_at = utcnow()
    return driver


_BY_KEY_HASH = select(Driver).where(
    Driver.api_key_hash == bindparam("key_hash"), Driver.revoked_at.is_(None)
)


async def authenticate(session: AsyncSession, api_key: str) -> Driver | None:
    """The active Driver holding ``api_key``, or None."""
    return await session.scalar(_BY_KEY_HASH, {"key_hash": hash_api_key(api_key)})


async def ensure_env_driver(
    session: AsyncSession,
    box: SecretBox,
    *,
    api_key: str,
    event_url: str | None,
    webhook_secret: str | None,
) -> Driver:
    """Make sure the Driver named ``default`` exists with this key (for containers and demos).

    Without ``webhook_secret`` a random one is made (and kept across restarts); set
    ``METAGOV_DRIVER_WEBHOOK_SECRET`` to know it, or rotate it with the CLI.
    """
    driver = await session.scalar(select(Driver).where(Driver.name == ENV_DRIVER_NAME))
    if driver is None:
        driver = (
            await create_driver(session, box, ENV_DRIVER_NAME, event_url=event_url, api_key=api_key)
        ).driver
    else:
        driver.api_key_hash = hash_api_key(api_key)
        driver.revoked_at = None
        if event_url is not None:
            driver.event_url = event_url
    if webhook_secret is not None:
        driver.webhook_secret = box.encrypt_text(webhook_secret)
    await session.flush()
    return driver
