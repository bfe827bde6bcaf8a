"""Every statement about MetagovIDs and linked accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from metagov.db.models import Community, LinkedAccount, MetagovId
from metagov.errors import Conflict


@dataclass(frozen=True)
class Resolved:
    """An id as named, the primary it resolves to (itself if it is one), and its community."""

    named: MetagovId
    primary: MetagovId
    community: Community


@dataclass(frozen=True)
class AccountFilter:
    """Conditions on linked accounts; None matches anything."""

    platform_type: str | None = None
    platform_identifier: str | None = None
    community_platform_id: str | None = None
    link_type: str | None = None
    link_quality: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        wanted = {
            LinkedAccount.platform_type: self.platform_type,
            LinkedAccount.platform_identifier: self.platform_identifier,
            LinkedAccount.community_platform_id: self.community_platform_id,
            LinkedAccount.link_type: self.link_type,
            LinkedAccount.link_quality: self.link_quality,
        }
        return [column == value for column, value in wanted.items() if value is not None]


_primary = aliased(MetagovId)


async def lock_community(session: AsyncSession, community_id: int) -> bool:
    """Serialize the identity changes of one community: each reads, checks, then writes, and a
    merge must not interleave with another (two crossed merges would make a cycle). False if
    the community is gone."""
    found = await session.scalar(
        select(Community.id).where(Community.id == community_id).with_for_update()
    )
    return found is not None


async def resolve(
    session: AsyncSession,
    external_ids: Sequence[str],
    *,
    driver_id: int | None = None,
    community_id: int | None = None,
) -> dict[str, Resolved]:
    """The ids among ``external_ids`` of the Driver's communities (or of one community), by
    external id, each with its primary, in one query."""
    query = (
        select(MetagovId, _primary, Community)
        .join(Community, Community.id == MetagovId.community_id)
        .outerjoin(_primary, _primary.id == MetagovId.primary_id)
        .where(MetagovId.external_id.in_(list(external_ids)))
        .execution_options(populate_existing=True)
    )
    if driver_id is not None:
        query = query.where(Community.driver_id == driver_id)
    if community_id is not None:
        query = query.where(MetagovId.community_id == community_id)
    rows = (await session.execute(query)).all()
    return {
        named.external_id: Resolved(named, primary or named, community)
        for named, primary, community in rows
    }


async def add_ids(session: AsyncSession, community_id: int, external_ids: Sequence[str]) -> None:
    session.add_all(MetagovId(community_id=community_id, external_id=e) for e in external_ids)
    await session.flush()


async def new_id(session: AsyncSession, community_id: int, external_id: str) -> MetagovId:
    created = MetagovId(community_id=community_id, external_id=external_id)
    session.add(created)
    await session.flush()
    return created


async def account(
    session: AsyncSession,
    community_id: int,
    platform_type: str,
    platform_identifier: str,
    community_platform_id: str,
) -> tuple[LinkedAccount, MetagovId] | None:
    """The account with this key in the community, with the id it hangs on."""
    row = (
        await session.execute(
            select(LinkedAccount, MetagovId)
            .join(MetagovId, MetagovId.id == LinkedAccount.metagov_id)
            .where(
                LinkedAccount.community_id == community_id,
                LinkedAccount.platform_type == platform_type,
                LinkedAccount.platform_identifier == platform_identifier,
                LinkedAccount.community_platform_id == community_platform_id,
            )
            .execution_options(populate_existing=True)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def add_account(session: AsyncSession, linked: LinkedAccount) -> None:
    """Insert ``linked``; an account linked meanwhile is a 409 (the constraint is the truth)."""
    session.add(linked)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(
            f"{linked.platform_type} account {linked.platform_identifier!r} is already linked "
            "in this community",
            code="account_linked",
        ) from None


async def save(session: AsyncSession) -> None:
    await session.flush()


async def remove_account(session: AsyncSession, linked: LinkedAccount) -> None:
    await session.delete(linked)
    await session.flush()


async def accounts_of(
    session: AsyncSession, metagov_ids: Sequence[int], where: AccountFilter | None = None
) -> list[LinkedAccount]:
    """The accounts hanging on these (primary) ids, oldest link first."""
    if not metagov_ids:
        return []
    query = select(LinkedAccount).where(LinkedAccount.metagov_id.in_(list(metagov_ids)))
    if where is not None:
        query = query.where(*where.conditions())
    query = query.order_by(LinkedAccount.id).execution_options(populate_existing=True)
    return list((await session.scalars(query)).all())


async def group_of(session: AsyncSession, primary_id: int) -> list[str]:
    """The external ids that resolve to ``primary_id``, itself first."""
    found = await session.scalars(
        select(MetagovId.external_id)
        .where(or_(MetagovId.id == primary_id, MetagovId.primary_id == primary_id))
        .order_by(MetagovId.primary_id.is_not(None), MetagovId.id)
    )
    return list(found.all())


async def merge(session: AsyncSession, primary_id: int, secondary_id: int) -> None:
    """Move the secondary's accounts to the primary, and point the secondary and every id that
    pointed at it to the primary (so that resolving any of them stays one lookup)."""
    await session.execute(
        update(LinkedAccount)
        .where(LinkedAccount.metagov_id == secondary_id)
        .values(metagov_id=primary_id)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(MetagovId)
        .where(or_(MetagovId.id == secondary_id, MetagovId.primary_id == secondary_id))
        .values(primary_id=primary_id)
        .execution_options(synchronize_session=False)
    )


async def primaries(
    session: AsyncSession,
    community_id: int,
    where: AccountFilter,
    *,
    after: int | None,
    limit: int,
) -> list[MetagovId]:
    """Up to ``limit`` primary ids of the community, by age, after the id ``after``, that have
    an account matching ``where`` (any id, when ``where`` sets nothing)."""
    query = select(MetagovId).where(
        MetagovId.community_id == community_id, MetagovId.primary_id.is_(None)
    )
    conditions = where.conditions()
    if conditions:
        query = query.where(exists().where(LinkedAccount.metagov_id == MetagovId.id, *conditions))
    if after is not None:
        query = query.where(MetagovId.id > after)
    return list((await session.scalars(query.order_by(MetagovId.id).limit(limit))).all())


async def with_matching_account(
    session: AsyncSession, primary_ids: Sequence[int], where: AccountFilter
) -> set[int]:
    """Those of ``primary_ids`` that have an account matching ``where``."""
    if not primary_ids:
        return set()
    found = await session.scalars(
        select(LinkedAccount.metagov_id)
        .where(LinkedAccount.metagov_id.in_(list(primary_ids)), *where.conditions())
        .distinct()
    )
    return set(found.all())
