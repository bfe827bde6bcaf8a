"""Every statement of the OAuth flows: used states, and where a platform tenant is installed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.models import Community, PluginInstance, UsedOAuthState


async def use_state(session: AsyncSession, nonce: str, expires_at: datetime, now: datetime) -> bool:
    """Record a state's nonce as used (and forget expired ones); False if it was used before."""
    if await session.get(UsedOAuthState, nonce) is not None:
        return False
    await session.execute(delete(UsedOAuthState).where(UsedOAuthState.expires_at < now))
    session.add(UsedOAuthState(nonce=nonce, expires_at=expires_at))
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        return False
    return True


async def installed_in(
    session: AsyncSession, plugin: str, platform_id: str, *, community_id: int, here: bool
) -> str | None:
    """The slug of a community (this one, or another) where the tenant is already installed."""
    same = Community.id == community_id if here else Community.id != community_id
    slug: str | None = await session.scalar(
        select(Community.slug)
        .join(PluginInstance, PluginInstance.community_id == Community.id)
        .where(
            PluginInstance.name == plugin,
            PluginInstance.community_platform_id == platform_id,
            same,
        )
    )
    return slug


async def enabled_in(session: AsyncSession, plugin: str, community_id: int) -> bool:
    found = await session.scalar(
        select(PluginInstance.id).where(
            PluginInstance.name == plugin, PluginInstance.community_id == community_id
        )
    )
    return found is not None
