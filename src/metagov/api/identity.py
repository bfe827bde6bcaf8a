"""Identity routes: MetagovIDs and the platform accounts linked to them (see
``docs/identity.md``). Paths are those of the original Metagov; the community is named in the
body or the query, and must be the Driver's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import StringConstraints

from metagov.api.deps import CurrentDriver, ReaderDep, SessionDep
from metagov.db.models import LinkQuality, LinkType
from metagov.errors import ERROR_RESPONSES
from metagov.identity import service
from metagov.identity.schemas import (
    AccountLinkedError,
    CreateIds,
    LinkAccount,
    LinkedAccountOut,
    MergeIds,
    UnlinkAccount,
    UserOut,
    UsersPage,
)

router = APIRouter(prefix="/api/internal/identity", tags=["identity"], responses=ERROR_RESPONSES)

IdParam = Annotated[str, Query(min_length=1, max_length=64, description="A MetagovID (`mgid_…`)")]
CommunityParam = Annotated[
    str, Query(min_length=1, max_length=64, description="The community's slug")
]
PlatformType = Annotated[
    str | None, Query(min_length=1, max_length=64, description="Only accounts of this plugin")
]
PlatformIdentifier = Annotated[
    str | None, Query(min_length=1, max_length=200, description="Only this platform account")
]
CommunityPlatformId = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Only accounts of this platform tenant (empty: accounts without one)",
    ),
]
LinkTypeParam = Annotated[LinkType | None, Query(description="Only links of this type")]
LinkQualityParam = Annotated[LinkQuality | None, Query(description="Only links of this quality")]


def _filter(
    platform_type: str | None,
    platform_identifier: str | None,
    community_platform_id: str | None,
    link_type: LinkType | None,
    link_quality: LinkQuality | None,
) -> service.AccountFilter:
    return service.AccountFilter(
        platform_type=platform_type,
        platform_identifier=platform_identifier,
        community_platform_id=community_platform_id,
        link_type=link_type.value if link_type else None,
        link_quality=link_quality.value if link_quality else None,
    )


@router.post("/create_id", status_code=status.HTTP_201_CREATED, operation_id="identity.create_id")
async def create_id(body: CreateIds, driver: CurrentDriver, session: SessionDep) -> list[str]:
    """New MetagovIDs in a community, one per person; unguessable strings (`mgid_…`)."""
    return await service.create_ids(session, driver, body.community, body.count)


@router.post("/merge_ids", operation_id="identity.merge_ids")
async def merge_ids(body: MergeIds, driver: CurrentDriver, session: SessionDep) -> UserOut:
    """Merge the secondary's person into the primary's: its accounts move to the primary, and
    the secondary (with every id merged into it before) resolves to the primary from now on.
    Answers the primary as `get_user` would."""
    return await service.merge_ids(session, driver, body.primary_id, body.secondary_id)


@router.post(
    "/link_account",
    status_code=status.HTTP_201_CREATED,
    operation_id="identity.link_account",
    responses={
        200: {
            "model": LinkedAccountOut,
            "description": "The account was linked to this person already; its link_type, "
            "link_quality and custom_data are now those sent",
        },
        409: {
            "model": AccountLinkedError,
            "description": "The account is linked to another id in the community "
            "(`account_linked`, naming it), or the id is of another community "
            "(`community_mismatch`)",
        },
    },
)
async def link_account(
    body: LinkAccount, response: Response, driver: CurrentDriver, session: SessionDep
) -> LinkedAccountOut:
    """Link a platform account to a person. The plugin must be enabled in the community; an
    account is linked to at most one person per community."""
    linked, created = await service.link_account(
        session,
        driver,
        metagov_id=body.id,
        community_slug=body.community,
        platform_type=body.platform_type,
        platform_identifier=body.platform_identifier,
        community_platform_id=body.community_platform_id,
        custom_data=body.custom_data,
        link_type=body.link_type,
        link_quality=body.link_quality,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return linked


@router.post("/unlink_account", operation_id="identity.unlink_account")
async def unlink_account(
    body: UnlinkAccount, driver: CurrentDriver, session: SessionDep
) -> LinkedAccountOut:
    """Unlink a platform account; answers the account as it was."""
    return await service.unlink_account(
        session,
        driver,
        community_slug=body.community,
        platform_type=body.platform_type,
        platform_identifier=body.platform_identifier,
        community_platform_id=body.community_platform_id,
    )


@router.get("/get_user", operation_id="identity.get_user")
async def get_user(id: IdParam, driver: CurrentDriver, session: ReaderDep) -> UserOut:
    """A person by any of their ids: `primary_id` is the id it resolves to, and
    `linked_accounts` every account of the person."""
    return await service.get_user(session, driver, id)


@router.get("/get_users", operation_id="identity.get_users")
async def get_users(
    community: CommunityParam,
    driver: CurrentDriver,
    session: ReaderDep,
    platform_type: PlatformType = None,
    community_platform_id: CommunityPlatformId = None,
    link_type: LinkTypeParam = None,
    link_quality: LinkQualityParam = None,
    platform_identifier: PlatformIdentifier = None,
    after: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="The `next` of the previous page"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UsersPage:
    """The community's people (primary ids), oldest first, that have an account matching every
    filter given (all of them, without filters). Paginated: pass the answer's `next` as
    `after` until it is null."""
    return await service.get_users(
        session,
        driver,
        community,
        _filter(platform_type, platform_identifier, community_platform_id, link_type, link_quality),
        after=after,
        limit=limit,
    )


@router.get("/filter_users_by_account", operation_id="identity.filter_users_by_account")
async def filter_users_by_account(
    ids: Annotated[
        list[Annotated[str, StringConstraints(max_length=64)]],
        Query(min_length=1, max_length=100, description="MetagovIDs (repeat the parameter)"),
    ],
    driver: CurrentDriver,
    session: ReaderDep,
    platform_type: PlatformType = None,
    community_platform_id: CommunityPlatformId = None,
    link_type: LinkTypeParam = None,
    link_quality: LinkQualityParam = None,
    platform_identifier: PlatformIdentifier = None,
) -> list[str]:
    """Those of `ids`, in the order given, whose person has an account matching every filter
    given."""
    return await service.filter_users_by_account(
        session,
        driver,
        ids,
        _filter(platform_type, platform_identifier, community_platform_id, link_type, link_quality),
    )


@router.get("/get_linked_account", operation_id="identity.get_linked_account")
async def get_linked_account(
    id: IdParam,
    platform_type: Annotated[
        str, Query(min_length=1, max_length=64, description="The plugin, e.g. `slack`")
    ],
    driver: CurrentDriver,
    session: ReaderDep,
    community_platform_id: CommunityPlatformId = None,
) -> LinkedAccountOut:
    """The person's account on a platform; 404 if they have none there, 409
    `ambiguous_account` (with `choices`) if they have several and `community_platform_id` does
    not pick one."""
    return await service.get_linked_account(
        session, driver, id, platform_type, community_platform_id
    )
