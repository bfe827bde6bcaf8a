"""Config, parameters and results of the Loomio plugin."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SERVER = "https://www.loomio.com"
POLL_TYPES = ("proposal", "poll", "count", "score", "ranked_choice", "meeting", "dot_vote")


class LoomioSettings(BaseSettings):
    """Gateway-wide rules for the Loomio servers communities may name (``METAGOV_LOOMIO__*``)."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_LOOMIO__", extra="ignore")

    allow_private_hosts: bool = Field(
        False,
        description="Let server_url be localhost or a private, loopback or reserved address "
        "(a Loomio on the gateway's own network, or a test server)",
    )


def _visible(raw: str) -> bool:
    return bool(raw) and raw.isascii() and raw.isprintable() and " " not in raw


def _visible_secret(cls: Any, value: SecretStr | None) -> SecretStr | None:
    """Keys and tokens travel in URLs and headers: printable ASCII without spaces. (None only in
    a re-configuration that keeps the stored value.)"""
    if value is not None and not _visible(value.get_secret_value()):
        raise ValueError("must be printable ASCII without spaces")
    return value


def _join_keys(cls: Any, value: Any) -> Any:
    """Subgroup keys arrive as a list; they are stored as one secret (the core encrypts single
    secret values), joined by commas, which never occur in a Loomio API key."""
    if isinstance(value, list | tuple):
        keys = []
        for item in value:
            key = item.get_secret_value() if isinstance(item, SecretStr) else item
            if not isinstance(key, str) or not _visible(key.strip()) or "," in key:
                raise ValueError(
                    "each subgroup API key is printable ASCII, without spaces or commas"
                )
            keys.append(key.strip())
        if len(keys) > 50:
            raise ValueError("at most 50 subgroup API keys")
        if len(set(keys)) != len(keys):
            raise ValueError("subgroup API keys must be distinct")
        return ",".join(keys) if keys else None
    return value


SubgroupKeys = Annotated[
    SecretStr | None,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 50},
                {"type": "null"},
            ],
            "description": "API keys of subgroups of the group, one per subgroup (secret)",
        }
    ),
]


def _new_token() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(32))


class LoomioConfig(BaseModel):
    """A community's Loomio group: its API key, optional subgroup keys, and the hook token."""

    model_config = ConfigDict(extra="forbid")

    group_handle: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="The handle of the group the api_key belongs to (its key if it has no "
        "handle); checked against Loomio when enabling. Identifies the instance.",
    )
    api_key: SecretStr = Field(min_length=1, max_length=200)
    subgroup_api_keys: SubgroupKeys = None
    server_url: str = Field(DEFAULT_SERVER, max_length=200)
    webhook_token: SecretStr = Field(
        default_factory=_new_token,
        min_length=16,
        max_length=200,
        description="Secret carried by the hook URL (?token=); generated when omitted and "
        "shown once, as the full hook URL, under notices.hook_url",
    )

    # A field validator rather than an annotation, so that the re-configure model the core
    # derives from this one (secret fields made optional) keeps it.
    _subgroup_keys = field_validator("subgroup_api_keys", mode="before")(_join_keys)
    _secrets = field_validator("api_key", "webhook_token")(_visible_secret)

    @field_validator("server_url")
    @classmethod
    def _https_origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not hold credentials, a query or a fragment")
        return value.rstrip("/")

    def subgroup_keys(self) -> list[str]:
        if self.subgroup_api_keys is None:
            return []
        return [k for k in self.subgroup_api_keys.get_secret_value().split(",") if k]


SubgroupRef = Annotated[
    str | None,
    Field(
        None,
        min_length=1,
        max_length=100,
        description="A subgroup configured with subgroup_api_keys: its handle, key or id. "
        "Omitted: the main group.",
    ),
]


class SubgroupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subgroup: SubgroupRef = None


class GroupView(BaseModel):
    id: int
    key: str | None = None
    handle: str | None = None
    name: str | None = None


class Member(BaseModel):
    user_id: int
    name: str | None = None
    username: str | None = None
    email: str | None = None
    admin: bool = False


class Members(BaseModel):
    group: GroupView
    members: list[Member]


def _recipients() -> Any:
    return Field(None, max_length=200)


class CreateDiscussion(SubgroupParams):
    title: str = Field(min_length=1, max_length=150)
    description: str | None = Field(None, max_length=100_000)
    description_format: Literal["html", "md"] | None = None
    recipient_audience: Literal["group"] | None = Field(
        None, description="'group' notifies the whole group"
    )
    recipient_user_ids: list[int] | None = _recipients()
    recipient_emails: list[Annotated[str, Field(max_length=254)]] | None = _recipients()
    recipient_message: str | None = Field(None, max_length=5000)


class DiscussionView(BaseModel):
    id: int
    key: str
    title: str | None = None
    url: str
    group_id: int | None = None
    author_id: int | None = None
    created_at: str | None = None


class GetPoll(SubgroupParams):
    poll: str = Field(
        min_length=1, max_length=40, pattern=r"^[A-Za-z0-9]+$", description="Its key or id"
    )


class OptionVotes(BaseModel):
    count: int = Field(description="How many voters chose it")
    users: list[str] = Field(description="Their Loomio user ids (Loomio lists at most 50)")
    score: int | float | None = Field(
        None, description="Total score (score, dot_vote and ranked_choice polls)"
    )


class PollOutcome(BaseModel):
    votes: dict[str, OptionVotes]
    voters_count: int | None = None
    undecided_voters_count: int | None = None
    cast_stances_pct: int | float | None = None
    url: str
    closed_at: str | None = None


class PollView(PollOutcome):
    id: int
    key: str
    title: str | None = None
    poll_type: str | None = None
    closing_at: str | None = None
    group_id: int | None = None
    author_id: int | None = None


class PollParams(SubgroupParams):
    """What Loomio's API takes to start a poll (``/api/b1/polls``)."""

    title: str = Field(min_length=1, max_length=250)
    poll_type: Literal[
        "proposal", "poll", "count", "score", "ranked_choice", "meeting", "dot_vote"
    ] = Field(description="The voting style")
    options: list[Annotated[str, Field(min_length=1, max_length=250)]] = Field(
        min_length=1,
        max_length=100,
        description="proposal: agree, abstain, disagree, block; meeting: ISO 8601 dates or "
        "times; otherwise anything",
    )
    closing_at: AwareDatetime = Field(description="When Loomio closes it (with a time zone)")
    details: str | None = Field(None, max_length=100_000)
    details_format: Literal["html", "md"] | None = None
    anonymous: bool | None = None
    hide_results: Literal["off", "until_vote", "until_closed"] | None = None
    specified_voters_only: bool | None = None
    voter_can_add_options: bool | None = None
    shuffle_options: bool | None = None
    discussion_id: int | None = Field(None, description="A thread to add the poll to")
    notify_on_closing_soon: Literal["nobody", "author", "undecided_voters", "voters"] | None = None
    recipient_audience: Literal["group"] | None = None
    recipient_user_ids: list[int] | None = _recipients()
    recipient_emails: list[Annotated[str, Field(max_length=254)]] | None = _recipients()
    recipient_message: str | None = Field(None, max_length=5000)
    min_score: int | None = Field(None, description="score polls")
    max_score: int | None = Field(None, description="score polls")
    dots_per_person: int | None = Field(None, ge=1, description="dot_vote polls")
    minimum_stance_choices: int | None = Field(None, ge=1, description="ranked_choice polls")
    can_respond_maybe: bool | None = Field(None, description="meeting polls")
    meeting_duration: int | None = Field(None, ge=1, description="meeting polls, in minutes")
    stance_reason_required: Literal["disabled", "optional", "required"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.options)) != len(self.options):
            raise ValueError("options must be distinct")
        if self.poll_type == "meeting":
            for option in self.options:
                try:
                    datetime.fromisoformat(option)
                except ValueError:
                    try:
                        date.fromisoformat(option)
                    except ValueError:
                        raise ValueError(
                            f"meeting options are ISO 8601 dates or times, not {option!r}"
                        ) from None
        if (
            self.min_score is not None
            and self.max_score is not None
            and self.min_score >= self.max_score
        ):
            raise ValueError("min_score must be less than max_score")
        return self

    def loomio_fields(self) -> dict[str, Any]:
        """The body Loomio gets: every field given, the subgroup left out (it picks the key)."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"subgroup"})
