"""Every statement about Drivers and communities."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.models import Community, Driver, PluginInstance
from metagov.errors import Conflict

# The lookup behind every community-scoped Driver request, built once: building a statement
# costs more than running it. With no plugin named, the instance join matches nothing.
_DRIVER_COMMUNITY_INSTANCES = (
    select(Driver, Community, PluginInstance)
    .outerjoin(
        Community, and_(Community.driver_id == Driver.id, Community.slug == bindparam("slug"))
    )
    .outerjoin(
        PluginInstance,
        and_(
            PluginInstance.community_id == Community.id,
            PluginInstance.name == bindparam("plugin"),
        ),
    )
    .where(Driver.api_key_hash == bindparam("key_hash"), Driver.revoked_at.is_(None))
    .order_by(PluginInstance.id)
)
_BY_KEY_HASH = select(Driver).where(
    Driver.api_key_hash == bindparam("key_hash"), Driver.revoked_at.is_(None)
)


async def driver_community_instances(
    session: AsyncSession, key_hash: str, slug: str, plugin: str | None
) -> tuple[Driver | None, Community | None, list[PluginInstance]]:
    """The active Driver with this key hash, its community ``slug`` and that community's
    instances of ``plugin`` (by id), in one query."""
    params = {"key_hash": key_hash, "slug": slug, "plugin": plugin}
    rows = (await session.execute(_DRIVER_COMMUNITY_INSTANCES, params)).all()
    if not rows:
        return None, None, []
    driver, community = rows[0][0], rows[0][1]
    return driver, community, [row[2] for row in rows if row[2] is not None]


async def active_driver(session: AsyncSession, key_hash: str) -> Driver | None:
    found: Driver | None = await session.scalar(_BY_KEY_HASH, {"key_hash": key_hash})
    return found


async def driver_named(session: AsyncSession, name: str) -> Driver | None:
    found: Driver | None = await session.scalar(select(Driver).where(Driver.name == name))
    return found


async def drivers(session: AsyncSession) -> Sequence[Driver]:
    return (await session.scalars(select(Driver).order_by(Driver.id))).all()


async def add_driver(session: AsyncSession, driver: Driver) -> None:
    session.add(driver)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a driver named {driver.name!r} already exists") from None


async def community_of(session: AsyncSession, driver_id: int, slug: str) -> Community | None:
    found: Community | None = await session.scalar(
        select(Community).where(Community.slug == slug, Community.driver_id == driver_id)
    )
    return found


async def community_by_slug(session: AsyncSession, slug: str) -> Community | None:
    found: Community | None = await session.scalar(select(Community).where(Community.slug == slug))
    return found


async def community_by_id(
    session: AsyncSession, community_id: int, *, lock: bool = False
) -> Community | None:
    return await session.get(
        Community, community_id, with_for_update=lock or None, populate_existing=lock
    )


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    return await session.scalar(select(Community.id).where(Community.slug == slug)) is not None


async def save_community(session: AsyncSession, community: Community) -> None:
    """Insert or update ``community``; a slug another community has is a 409."""
    session.add(community)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"the slug {community.slug!r} is taken", code="slug_taken") from None


async def delete_community(session: AsyncSession, community: Community) -> None:
    await session.delete(community)
    await session.flush()
