"""Communities, the tenants. Each belongs to the Driver that created it, and only that Driver can
see it or anything inside it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.models import Community, Driver, PluginInstance
from metagov.errors import Conflict, FieldError, InvalidInput, NotFound
from metagov.runtime import Runtime
from metagov.services import drivers
from metagov.services import plugins as plugin_service

# What plugins asked to show the Driver once, by instance id.
Notices = dict[int, dict[str, Any]]

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


async def get_for_key(
    session: AsyncSession, api_key: str, slug: str, plugin: str | None = None
) -> tuple[Driver | None, Community | None, list[PluginInstance]]:
    """The active Driver holding ``api_key``, its community ``slug`` and that community's
    instances of ``plugin`` (by id), in one query. The Driver or the community is None when
    there is no such Driver, or no such community of that Driver."""
    params = {"key_hash": drivers.hash_api_key(api_key), "slug": slug, "plugin": plugin}
    rows = (await session.execute(_DRIVER_COMMUNITY_INSTANCES, params)).all()
    if not rows:
        return None, None, []
    driver, community = rows[0][0], rows[0][1]
    return driver, community, [row[2] for row in rows if row[2] is not None]


async def get_community(session: AsyncSession, driver: Driver, slug: str) -> Community:
    """The Driver's community ``slug``; 404 whether it does not exist or belongs to another."""
    community = await session.scalar(
        select(Community).where(Community.slug == slug, Community.driver_id == driver.id)
    )
    if community is None:
        raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return community


async def get_community_by_slug(session: AsyncSession, slug: str) -> Community:
    """Any Driver's community ``slug``: only for public routes, which expose nothing of it."""
    community = await session.scalar(select(Community).where(Community.slug == slug))
    if community is None:
        raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return community


async def _check_slug_free(session: AsyncSession, slug: str) -> None:
    if await session.scalar(select(Community.id).where(Community.slug == slug)) is not None:
        raise Conflict(f"the slug {slug!r} is taken", code="slug_taken")


async def create_community(
    session: AsyncSession,
    runtime: Runtime,
    driver: Driver,
    *,
    slug: str | None,
    readable_name: str,
    plugins: Sequence[tuple[str, Mapping[str, Any]]],
) -> tuple[Community, Notices]:
    """Create a community with its plugins; returns it with the notices its plugins left for the
    Driver, by instance id."""
    slug = slug or str(uuid.uuid4())
    await _check_slug_free(session, slug)
    community = Community(slug=slug, readable_name=readable_name, driver_id=driver.id)
    session.add(community)
    await session.flush()
    return community, await _enable_all(session, runtime, community, plugins)


async def _enable_all(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    plugins: Sequence[tuple[str, Mapping[str, Any]]],
) -> Notices:
    """Enable or re-configure each listed plugin; returns the instances listed, by id, with the
    notices their plugins left for the Driver."""
    unknown = [
        FieldError(
            loc=["body", "plugins", i, "name"], msg=f"unknown plugin {name!r}", type="value_error"
        )
        for i, (name, _) in enumerate(plugins)
        if name not in runtime.registry.plugins
    ]
    if unknown:
        raise InvalidInput(unknown)
    listed: Notices = {}
    for index, (name, config) in enumerate(plugins):
        spec = runtime.registry.get(name)
        enabled = await plugin_service.enable_plugin(
            session, runtime, community, spec, config, loc=("body", "plugins", index, "config")
        )
        if enabled.instance.id in listed:
            raise Conflict(f"plugins[{index}] names the same {name!r} instance as an earlier entry")
        listed[enabled.instance.id] = enabled.notices
    return listed


async def update_community(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    *,
    slug: str | None,
    readable_name: str | None,
    plugins: Sequence[tuple[str, Mapping[str, Any]]] | None,
) -> Notices:
    """Declarative update: the listed plugins are enabled or re-configured (keeping their state
    and processes); enabled plugins that are not listed are disabled. Returns the notices the
    listed plugins left for the Driver, by instance id."""
    if slug is not None and slug != community.slug:
        await _check_slug_free(session, slug)
        community.slug = slug
    if readable_name is not None:
        community.readable_name = readable_name
    if plugins is None:
        await session.flush()
        return {}
    keep = await _enable_all(session, runtime, community, plugins)
    for instance in await plugin_service.list_instances(session, community):
        if instance.id not in keep:
            await plugin_service.disable_instance(session, instance)
    await session.flush()
    return keep


async def delete_community(session: AsyncSession, community: Community) -> None:
    await session.delete(community)
    await session.flush()


async def community_plugins(
    session: AsyncSession, community: Community
) -> Sequence[PluginInstance]:
    return await plugin_service.list_instances(session, community)
