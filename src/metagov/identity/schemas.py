"""How Drivers see identities: request and response models of the identity API, and the records
carried by ``identity.*`` events. Paths and field names follow the original Metagov where they
were sound; ``docs/identity.md`` lists each deviation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from metagov.db.models import Community, LinkedAccount, LinkQuality, LinkType, MetagovId
from metagov.errors import ErrorBody

MetagovIdText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(description="A MetagovID, as `create_id` returned it (`mgid_…`)"),
]
CommunityText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(description="The community's slug"),
]
PlatformType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(description="The plugin of the platform, e.g. `slack`"),
]
PlatformIdentifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    Field(description="The account's id on the platform, e.g. a Slack user id"),
]
CommunityPlatformId = Annotated[
    str | None,
    StringConstraints(max_length=200),
    Field(
        description="The platform tenant the account belongs to (a Slack team id), for "
        "platforms whose accounts are not global; absent or empty for the others"
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateIds(Strict):
    community: CommunityText
    count: int = Field(1, ge=1, le=100, description="How many new ids")


class MergeIds(Strict):
    primary_id: MetagovIdText = Field(description="The id the person keeps")
    secondary_id: MetagovIdText = Field(
        description="The id merged into it; it keeps resolving to the primary"
    )


class AccountKey(Strict):
    """Names one platform account in one community."""

    community: CommunityText
    platform_type: PlatformType
    platform_identifier: PlatformIdentifier
    community_platform_id: CommunityPlatformId = None


class UnlinkAccount(AccountKey):
    pass


class LinkAccount(AccountKey):
    id: MetagovIdText
    custom_data: dict[str, Any] = Field(
        default_factory=dict, description="Anything the Driver wants kept with the account"
    )
    link_type: LinkType = LinkType.MANUAL
    link_quality: LinkQuality = LinkQuality.UNKNOWN


class LinkedAccountOut(BaseModel):
    """A platform account linked to a person; ``metagov_id`` is the person's primary id."""

    metagov_id: str
    community: str
    platform_type: str
    platform_identifier: str
    community_platform_id: str | None
    custom_data: dict[str, Any]
    link_type: LinkType
    link_quality: LinkQuality
    linked_at: datetime
    updated_at: datetime

    @classmethod
    def build(
        cls, account: LinkedAccount, metagov_id: str, community_slug: str
    ) -> LinkedAccountOut:
        return cls(
            metagov_id=metagov_id,
            community=community_slug,
            platform_type=account.platform_type,
            platform_identifier=account.platform_identifier,
            community_platform_id=account.community_platform_id or None,
            custom_data=account.custom_data,
            link_type=LinkType(account.link_type),
            link_quality=LinkQuality(account.link_quality),
            linked_at=account.created_at,
            updated_at=account.updated_at,
        )


class UserOut(BaseModel):
    """A person: the id asked for, the primary id it resolves to (itself unless it was merged
    into another), and every account linked to the person."""

    id: str
    primary_id: str
    community: str
    linked_accounts: list[LinkedAccountOut]

    @classmethod
    def build(
        cls,
        named: MetagovId,
        primary: MetagovId,
        community: Community,
        accounts: list[LinkedAccount],
    ) -> UserOut:
        return cls(
            id=named.external_id,
            primary_id=primary.external_id,
            community=community.slug,
            linked_accounts=[
                LinkedAccountOut.build(a, primary.external_id, community.slug) for a in accounts
            ],
        )


class UsersPage(BaseModel):
    """One page of people, oldest first."""

    users: list[UserOut]
    next: str | None = Field(
        description="Pass it as `after` for the next page; null on the last page"
    )


class AccountLinkedError(ErrorBody):
    """The account is already linked to another id in the community."""

    metagov_id: str = Field(description="The (primary) id the account is linked to")
