"""Settings, config, parameters, results, event data and the poll's models of the Discourse
plugin."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from metagov.plugins.discourse.urls import normalize_server_url

# Discourse usernames: letters (any script), digits, ".", "-" and "_".
USERNAME_PATTERN = r"^[\w.\-]{1,60}$"
GROUP_PATTERN = r"^[\w.\-]{1,60}$"
MAX_ID = 2**31 - 1

Username = Annotated[str, Field(pattern=USERNAME_PATTERN, examples=["alice"])]
DiscourseId = Annotated[int, Field(ge=1, le=MAX_ID)]
Raw = Annotated[str, Field(min_length=1, max_length=100_000, description="Markdown")]


class DiscourseSettings(BaseSettings):
    """Gateway-wide rules for the forums communities may connect (``METAGOV_DISCOURSE__*``)."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_DISCOURSE__", extra="ignore")

    allow_http: bool = False
    allow_private_hosts: bool = False
    max_cached_users: int = Field(5000, ge=0)
    user_fetch_concurrency: int = Field(4, ge=1, le=32)


class DiscourseConfig(BaseModel):
    """One forum of a community. ``server_url`` is stored normalised and is the instance's
    ``community_platform_id``, so a community may connect several forums."""

    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(
        min_length=1,
        max_length=300,
        description="The forum's base URL",
        examples=["https://forum.example.org"],
    )
    api_key: SecretStr = Field(description="An admin API key (All Users) created in the forum")
    api_username: str = Field(
        "system",
        pattern=USERNAME_PATTERN,
        description="The user the gateway acts as (an admin for the user list and polls)",
    )
    webhook_secret: SecretStr = Field(
        description="The secret entered in the forum's webhook; signs every delivery"
    )

    @field_validator("server_url")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_server_url(value)

    @field_validator("api_key")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # None only in a re-configuration that keeps the stored key (the secret left out).
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 12:
            raise ValueError("must be at least 12 characters (Discourse refuses shorter ones)")
        return value


# --- actions ---------------------------------------------------------------------------------


class CreateMessage(BaseModel):
    """A private message to users: a new thread, or a reply in one (``topic_id``)."""

    model_config = ConfigDict(extra="forbid")

    raw: Raw
    target_usernames: list[Username] = Field(min_length=1, max_length=50)
    title: str | None = Field(None, min_length=1, max_length=255)
    topic_id: DiscourseId | None = Field(None, description="Reply in this message thread")

    @model_validator(mode="after")
    def _title_for_a_new_thread(self) -> Self:
        if self.topic_id is None and self.title is None:
            raise ValueError("a new message thread needs a title (or give topic_id to reply)")
        return self


class CreatePost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw: Raw
    topic_id: DiscourseId
    reply_to_post_number: DiscourseId | None = None


class CreateTopic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw: Raw
    title: str = Field(min_length=1, max_length=255)
    category: DiscourseId | None = Field(None, description="The category id")
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=20
    )


class PostOrTopic(BaseModel):
    """Where the new post is."""

    url: str
    topic_id: int
    post_id: int


class ById(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DiscourseId


class LockPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DiscourseId
    locked: bool = Field(description="true locks the post against edits, false unlocks it")


class Locked(BaseModel):
    locked: bool


class TopicInfo(BaseModel):
    id: int
    title: str
    slug: str
    url: str
    category_id: int | None = None
    posts_count: int | None = None
    closed: bool = False
    archived: bool = False
    tags: list[Any] = Field(default_factory=list)
    created_by: str | None = Field(None, description="Username of the topic's author")
    data: dict[str, Any] = Field(description="Discourse's whole answer")


class GetUser(BaseModel):
    """Give ``username``, or ``id`` (read through the admin API)."""

    model_config = ConfigDict(extra="forbid")

    username: Username | None = None
    id: Annotated[int, Field(ge=-(2**31), le=MAX_ID)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.username is None) == (self.id is None):
            raise ValueError("give exactly one of username and id")
        return self


class UserInfo(BaseModel):
    id: int
    username: str
    name: str | None = None
    url: str
    admin: bool | None = None
    moderator: bool | None = None
    trust_level: int | None = None
    user_fields: dict[str, Any] | None = None
    data: dict[str, Any] = Field(description="Discourse's whole answer")


# --- events ----------------------------------------------------------------------------------


class PostCreatedData(BaseModel):
    id: int
    topic_id: int
    post_number: int | None
    raw: str | None
    url: str
    username: str | None
    topic_title: str | None
    category_id: int | None


class TopicCreatedData(BaseModel):
    id: int
    title: str
    tags: list[Any]
    category: int | None
    url: str


class FieldChange(BaseModel):
    old: Any
    new: Any


class UserFieldsChangedData(BaseModel):
    id: int
    username: str
    user_fields: dict[str, Any]
    old_user_fields: dict[str, Any] | None = Field(
        description="None when the user was not in the cached user list"
    )
    changed_fields: dict[str, FieldChange]


# --- the poll --------------------------------------------------------------------------------

_MARKUP = re.compile(r"\[/?poll", re.IGNORECASE)
PollOption = Annotated[str, Field(min_length=1, max_length=500)]


def _no_markup(value: str, what: str) -> None:
    if _MARKUP.search(value):
        raise ValueError(f"{what} must not contain poll markup ([poll] or [/poll])")


class PollParams(BaseModel):
    """A native Discourse poll, posted as a new topic or as a reply in ``topic_id``."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=255, description="Topic title and poll title")
    options: list[PollOption] | None = Field(
        None, min_length=1, max_length=100, description="Not for a number poll"
    )
    details: str | None = Field(None, max_length=30_000, description="Markdown above the poll")
    closing_at: AwareDatetime | None = Field(
        None, description="Closes by itself at this time (with a time zone)"
    )
    topic_id: DiscourseId | None = Field(None, description="Post the poll as a reply here")
    category: DiscourseId | None = Field(None, description="Category of the new topic")
    poll_type: Literal["regular", "multiple", "number"] = "regular"
    public: bool | None = Field(None, description="Whether voters' names are shown")
    results: Literal["always", "on_vote", "on_close", "staff_only"] | None = None
    min: int | None = Field(None, ge=0, le=1_000_000)
    max: int | None = Field(None, ge=1, le=1_000_000)
    step: int | None = Field(None, ge=1, le=1_000_000)
    chart_type: Literal["bar", "pie"] | None = None
    groups: list[Annotated[str, Field(pattern=GROUP_PATTERN)]] | None = Field(
        None, min_length=1, max_length=50, description="Only these groups may vote"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if "\n" in self.title or "\r" in self.title:
            raise ValueError("title must be one line")
        _no_markup(self.title, "title")
        if self.details is not None:
            _no_markup(self.details, "details")
        if self.poll_type == "number":
            if self.options is not None:
                raise ValueError("a number poll takes no options (use min, max and step)")
        else:
            if not self.options:
                raise ValueError(f"a {self.poll_type} poll needs options")
            for option in self.options:
                if "\n" in option or "\r" in option or not option.strip():
                    raise ValueError("each option must be one non-blank line")
                _no_markup(option, "options")
            if len({o.strip().casefold() for o in self.options}) != len(self.options):
                raise ValueError("options must be distinct")
            if self.poll_type == "multiple" and (self.max or 0) > len(self.options):
                raise ValueError("max must not exceed the number of options")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be greater than max")
        if self.topic_id is not None and self.category is not None:
            raise ValueError("give topic_id (a reply) or category (a new topic), not both")
        return self


class PollOutcome(BaseModel):
    votes: dict[str, int] = Field(
        default_factory=dict,
        description="Votes per option, as far as Discourse shows results (empty otherwise)",
    )
    voters: int = 0
    url: str | None = None
