"""MetagovIDs and linked accounts: creating, merging, linking, unlinking, and reading them.

Every id belongs to one community, so to its Driver: ids of another Driver's communities are
unknown (404). A change locks the community's row first, so identity changes of one community
happen one at a time; each records its event (``identity.linked``, ``identity.unlinked``,
``identity.merged``) in the same transaction. Accounts always hang on a primary id, so the
accounts of a person are those of its primary.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from metagov.db.engine import Session
from metagov.db.models import Community, Driver, LinkedAccount, LinkQuality, LinkType, MetagovId
from metagov.errors import (
    AmbiguousPlugin,
    Conflict,
    ErrorBody,
    FieldError,
    InvalidInput,
    NotFound,
)
from metagov.identity import repository
from metagov.identity.repository import AccountFilter, Resolved
from metagov.identity.schemas import AccountLinkedError, LinkedAccountOut, UserOut, UsersPage
from metagov.instances import service as instances
from metagov.outbox import service as outbox
from metagov.tenancy import service as tenancy

ID_PREFIX = "mgid_"
SOURCE = "identity"
# A login confirms an account, but never lowers what the Driver established otherwise.
_QUALITY_RANK = {
    LinkQuality.UNKNOWN: 0,
    LinkQuality.WEAK_CONFIRM: 1,
    LinkQuality.CONFIRMED: 2,
    LinkQuality.STRONG_CONFIRM: 3,
}

__all__ = [
    "AccountFilter",
    "AccountLinked",
    "AmbiguousAccount",
    "create_ids",
    "filter_users_by_account",
    "get_linked_account",
    "get_user",
    "get_users",
    "link_account",
    "link_login",
    "merge_ids",
    "require_id",
    "unlink_account",
]


class AmbiguousAccount(AmbiguousPlugin):
    """The person has several accounts on the platform; ``choices`` lists them."""

    code = "ambiguous_account"


class AccountLinked(Conflict):
    """The account is already linked to another id in the community; names that id."""

    code = "account_linked"

    def __init__(self, detail: str, metagov_id: str, *, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.metagov_id = metagov_id

    def body(self) -> ErrorBody:
        return AccountLinkedError(detail=self.detail, code=self.code, metagov_id=self.metagov_id)


def new_external_id() -> str:
    """128 random bits: an id says nothing of any other, and cannot be guessed."""
    return ID_PREFIX + secrets.token_urlsafe(16)


def _platform_id(value: str | None) -> str:
    return value or ""


def _unknown_id(external_id: str) -> NotFound:
    return NotFound(f"no MetagovID {external_id!r}")


async def _resolve(session: Session, driver: Driver, external_id: str) -> Resolved:
    found = await repository.resolve(session, [external_id], driver_id=driver.id)
    if external_id not in found:
        raise _unknown_id(external_id)
    return found[external_id]


async def _user(session: Session, resolved: Resolved) -> UserOut:
    accounts = await repository.accounts_of(session, [resolved.primary.id])
    return UserOut.build(resolved.named, resolved.primary, resolved.community, accounts)


def _describe(platform_type: str, platform_identifier: str, community_platform_id: str) -> str:
    where = f" of {community_platform_id!r}" if community_platform_id else ""
    return f"{platform_type} account {platform_identifier!r}{where}"


async def _lock(session: Session, community: Community) -> None:
    if not await repository.lock_community(session, community.id):
        raise NotFound(f"community {community.slug!r} not found", code="unknown_community")


# --- changes ------------------------------------------------------------------------------------


async def create_ids(
    session: Session, driver: Driver, community_slug: str, count: int
) -> list[str]:
    """``count`` new ids in the Driver's community."""
    community = await tenancy.get_community(session, driver, community_slug)
    created = [new_external_id() for _ in range(count)]
    await repository.add_ids(session, community.id, created)
    return created


async def merge_ids(
    session: Session, driver: Driver, primary_id: str, secondary_id: str
) -> UserOut:
    """Merge the person of ``secondary_id`` into the person of ``primary_id``: the secondary's
    accounts move to the primary, and every id that resolved to the secondary's primary now
    resolves to the primary's. Merging two ids of one person already changes nothing."""
    found = await repository.resolve(session, [primary_id, secondary_id], driver_id=driver.id)
    for external_id in (primary_id, secondary_id):
        if external_id not in found:
            raise _unknown_id(external_id)
    if primary_id == secondary_id:
        raise InvalidInput(
            [
                FieldError(
                    loc=["body", "secondary_id"],
                    msg="an id cannot be merged into itself",
                    type="value_error",
                )
            ]
        )
    community = found[primary_id].community
    if found[secondary_id].community.id != community.id:
        raise Conflict(
            f"{primary_id!r} belongs to community {community.slug!r} and {secondary_id!r} to "
            f"{found[secondary_id].community.slug!r}; only ids of one community can be merged",
            code="community_mismatch",
        )
    await _lock(session, community)
    # Read again under the lock: another merge may have re-pointed them meanwhile.
    found = await repository.resolve(session, [primary_id, secondary_id], driver_id=driver.id)
    keep, gone = found[primary_id].primary, found[secondary_id].primary
    if keep.id != gone.id:
        merged = await repository.group_of(session, gone.id)
        await repository.merge(session, keep.id, gone.id)
        user = await _user(session, found[primary_id])
        await outbox.record_event(
            session,
            community.id,
            source=SOURCE,
            event_type="identity.merged",
            data={
                "primary_id": keep.external_id,
                "secondary_id": secondary_id,
                "merged_ids": merged,
                "linked_accounts": [a.model_dump(mode="json") for a in user.linked_accounts],
            },
        )
        return user
    return await _user(session, found[primary_id])


async def _require_plugin(session: Session, community: Community, plugin: str) -> None:
    if not await instances.instances_of(session, community.id, plugin):
        raise NotFound(
            f"plugin {plugin!r} is not enabled in community {community.slug!r}",
            code="plugin_not_enabled",
        )


async def _record_link(
    session: Session,
    event_type: str,
    record: LinkedAccountOut,
    community: Community,
    initiator: dict[str, Any] | None = None,
) -> None:
    await outbox.record_event(
        session,
        community.id,
        source=SOURCE,
        event_type=event_type,
        data=record.model_dump(mode="json"),
        initiator=initiator,
    )


async def _link(
    session: Session,
    community: Community,
    primary: MetagovId,
    *,
    platform_type: str,
    platform_identifier: str,
    community_platform_id: str,
    custom_data: dict[str, Any] | None,
    link_type: LinkType,
    link_quality: LinkQuality,
    conflict_code: str = "account_linked",
    initiator: dict[str, Any] | None = None,
) -> tuple[LinkedAccountOut, bool]:
    """Link the account to ``primary`` (the community is locked); returns it and whether it
    is a new link. An account linked to ``primary`` already takes the new type, quality and
    (unless None) custom data; one linked to another id is a 409 naming that id."""
    key = (platform_type, platform_identifier, community_platform_id)
    existing = await repository.account(session, community.id, *key)
    if existing is not None:
        linked, holder = existing
        if holder.id != primary.id:
            raise AccountLinked(
                f"{_describe(*key)} is already linked to {holder.external_id} in community "
                f"{community.slug!r}; unlink it first, or merge the two ids",
                holder.external_id,
                code=conflict_code,
            )
        new = (
            link_type.value,
            link_quality.value,
            linked.custom_data if custom_data is None else custom_data,
        )
        if new != (linked.link_type, linked.link_quality, linked.custom_data):
            linked.link_type, linked.link_quality, linked.custom_data = new
            await repository.save(session)
            record = LinkedAccountOut.build(linked, primary.external_id, community.slug)
            await _record_link(session, "identity.linked", record, community, initiator)
            return record, False
        return LinkedAccountOut.build(linked, primary.external_id, community.slug), False
    linked = LinkedAccount(
        metagov_id=primary.id,
        community_id=community.id,
        platform_type=platform_type,
        platform_identifier=platform_identifier,
        community_platform_id=community_platform_id,
        custom_data=custom_data or {},
        link_type=link_type.value,
        link_quality=link_quality.value,
    )
    await repository.add_account(session, linked)
    record = LinkedAccountOut.build(linked, primary.external_id, community.slug)
    await _record_link(session, "identity.linked", record, community, initiator)
    return record, True


async def link_account(
    session: Session,
    driver: Driver,
    *,
    metagov_id: str,
    community_slug: str,
    platform_type: str,
    platform_identifier: str,
    community_platform_id: str | None,
    custom_data: dict[str, Any],
    link_type: LinkType,
    link_quality: LinkQuality,
) -> tuple[LinkedAccountOut, bool]:
    """Link a platform account to the person of ``metagov_id``; returns the account and whether
    the link is new. Linking it again to the same person sets its type, quality and custom data.
    """
    community = await tenancy.get_community(session, driver, community_slug)
    resolved = await _resolve(session, driver, metagov_id)
    if resolved.community.id != community.id:
        raise Conflict(
            f"{metagov_id!r} belongs to community {resolved.community.slug!r}, "
            f"not {community.slug!r}",
            code="community_mismatch",
        )
    await _require_plugin(session, community, platform_type)
    await _lock(session, community)
    resolved = await _resolve(session, driver, metagov_id)
    return await _link(
        session,
        community,
        resolved.primary,
        platform_type=platform_type,
        platform_identifier=platform_identifier,
        community_platform_id=_platform_id(community_platform_id),
        custom_data=custom_data,
        link_type=link_type,
        link_quality=link_quality,
    )


async def unlink_account(
    session: Session,
    driver: Driver,
    *,
    community_slug: str,
    platform_type: str,
    platform_identifier: str,
    community_platform_id: str | None,
) -> LinkedAccountOut:
    """Unlink the account from whoever it is linked to; returns it as it was. (A plugin that
    was disabled since does not stop this: the link is the Driver's to undo.)"""
    community = await tenancy.get_community(session, driver, community_slug)
    await _lock(session, community)
    key = (platform_type, platform_identifier, _platform_id(community_platform_id))
    existing = await repository.account(session, community.id, *key)
    if existing is None:
        raise NotFound(f"{_describe(*key)} is not linked in community {community.slug!r}")
    linked, holder = existing
    record = LinkedAccountOut.build(linked, holder.external_id, community.slug)
    await repository.remove_account(session, linked)
    await _record_link(session, "identity.unlinked", record, community)
    return record


async def require_id(session: Session, community: Community, metagov_id: str) -> None:
    """404 unless ``metagov_id`` is an id of ``community``."""
    if metagov_id not in await repository.resolve(session, [metagov_id], community_id=community.id):
        raise _unknown_id(metagov_id)


async def link_login(
    session: Session,
    community: Community,
    *,
    platform_type: str,
    platform_identifier: str,
    community_platform_id: str | None,
    metagov_id: str | None,
) -> str:
    """Link the account a user just logged in with (``link_type`` oauth, at least
    ``confirmed``): to the person of ``metagov_id``; without one, to the person the account is
    linked to already, else to a new id. Returns the person's primary id. An account linked to
    another person is not moved: :class:`AccountLinked` (``account_linked_elsewhere``)."""
    await _lock(session, community)
    pid = _platform_id(community_platform_id)
    existing = await repository.account(
        session, community.id, platform_type, platform_identifier, pid
    )
    primary: MetagovId
    if metagov_id is not None:
        found = await repository.resolve(session, [metagov_id], community_id=community.id)
        if metagov_id not in found:
            raise _unknown_id(metagov_id)
        primary = found[metagov_id].primary
    elif existing is not None:
        primary = existing[1]
    else:
        primary = await repository.new_id(session, community.id, new_external_id())
    quality = LinkQuality.CONFIRMED
    if existing is not None:
        held = LinkQuality(existing[0].link_quality)
        quality = max(quality, held, key=_QUALITY_RANK.__getitem__)
    await _link(
        session,
        community,
        primary,
        platform_type=platform_type,
        platform_identifier=platform_identifier,
        community_platform_id=pid,
        custom_data=None,
        link_type=LinkType.OAUTH,
        link_quality=quality,
        conflict_code="account_linked_elsewhere",
        initiator={"user_id": platform_identifier, "provider": platform_type},
    )
    return primary.external_id


# --- reads --------------------------------------------------------------------------------------


async def get_user(session: Session, driver: Driver, metagov_id: str) -> UserOut:
    return await _user(session, await _resolve(session, driver, metagov_id))


async def get_users(
    session: Session,
    driver: Driver,
    community_slug: str,
    where: AccountFilter,
    *,
    after: str | None,
    limit: int,
) -> UsersPage:
    """The community's people (primary ids) with an account matching ``where``, oldest first,
    a page at a time: ``after`` is the last id of the previous page."""
    community = await tenancy.get_community(session, driver, community_slug)
    after_row: int | None = None
    if after is not None:
        found = await repository.resolve(session, [after], community_id=community.id)
        if after not in found:
            raise _unknown_id(after)
        after_row = found[after].named.id
    page = await repository.primaries(
        session, community.id, where, after=after_row, limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    accounts = await repository.accounts_of(session, [p.id for p in page])
    by_id: dict[int, list[LinkedAccount]] = {p.id: [] for p in page}
    for linked in accounts:
        by_id[linked.metagov_id].append(linked)
    users = [UserOut.build(p, p, community, by_id[p.id]) for p in page]
    return UsersPage(users=users, next=page[-1].external_id if more else None)


async def filter_users_by_account(
    session: Session, driver: Driver, metagov_ids: Sequence[str], where: AccountFilter
) -> list[str]:
    """Those of ``metagov_ids`` (in the order given, once each) whose person has an account
    matching ``where``."""
    wanted = list(dict.fromkeys(metagov_ids))
    found = await repository.resolve(session, wanted, driver_id=driver.id)
    missing = [i for i in wanted if i not in found]
    if missing:
        raise _unknown_id(missing[0])
    matching = await repository.with_matching_account(
        session, list({r.primary.id for r in found.values()}), where
    )
    return [i for i in wanted if found[i].primary.id in matching]


async def get_linked_account(
    session: Session,
    driver: Driver,
    metagov_id: str,
    platform_type: str,
    community_platform_id: str | None,
) -> LinkedAccountOut:
    """The person's account on ``platform_type`` (in ``community_platform_id``, if given); when
    the person has several there and none is named, 409 listing them."""
    resolved = await _resolve(session, driver, metagov_id)
    where = AccountFilter(platform_type=platform_type, community_platform_id=community_platform_id)
    found = await repository.accounts_of(session, [resolved.primary.id], where)
    if not found:
        raise NotFound(f"{metagov_id!r} has no linked {platform_type} account")
    if len(found) > 1:
        raise AmbiguousAccount(
            f"{metagov_id!r} has {len(found)} linked {platform_type} accounts; name one with "
            "community_platform_id",
            [
                {
                    "community_platform_id": a.community_platform_id or None,
                    "platform_identifier": a.platform_identifier,
                }
                for a in found
            ],
        )
    return LinkedAccountOut.build(found[0], resolved.primary.external_id, resolved.community.slug)
