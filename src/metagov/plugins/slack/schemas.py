"""Settings, config, parameters and outcomes of the Slack plugin."""

from __future__ import annotations

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
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_METHODS = (
    "chat.postMessage",
    "chat.postEphemeral",
    "chat.update",
    "chat.delete",
    "chat.getPermalink",
    "conversations.info",
    "conversations.list",
    "conversations.members",
    "conversations.join",
    "conversations.open",
    "pins.add",
    "reactions.add",
    "reactions.get",
    "users.info",
    "users.list",
)
BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "channels:join",
    "channels:read",
    "chat:write",
    "groups:history",
    "groups:read",
    "im:history",
    "im:read",
    "im:write",
    "mpim:history",
    "mpim:read",
    "mpim:write",
    "pins:write",
    "reactions:read",
    "reactions:write",
    "users:read",
)


class SlackSettings(BaseSettings):
    """The Slack app's credentials, shared by every community (``METAGOV_SLACK__*``)."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_SLACK__", env_file=".env", extra="ignore")

    client_id: str | None = None
    client_secret: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_id: str | None = None
    api_url: str = "https://slack.com/api"
    authorize_url: str = "https://slack.com/oauth/v2/authorize"
    method_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_METHODS)
    )
    bot_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(BOT_SCOPES))
    user_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["users:read"])

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("method_allowlist", "bot_scopes", "user_scopes"):
                if isinstance(data.get(key), str):
                    data[key] = [p.strip() for p in data[key].split(",") if p.strip()]
        return data


class SlackConfig(BaseModel):
    """A community's Slack workspace, written by the OAuth install (or by hand)."""

    model_config = ConfigDict(extra="forbid")

    team_id: str = Field(min_length=1, max_length=50)
    team_name: str = ""
    bot_token: SecretStr
    bot_user_id: str | None = None
    installer_user_id: str | None = None

    @field_validator("bot_token")
    @classmethod
    def _printable(cls, value: SecretStr | None) -> SecretStr | None:
        """The token travels in a header (checked with Slack when the instance is enabled)."""
        raw = None if value is None else value.get_secret_value()
        if raw is not None and not (raw and raw.isascii() and raw.isprintable() and " " not in raw):
            raise ValueError("must be printable ASCII without spaces")
        return value


class PostMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=40000)
    blocks: list[dict[str, Any]] | None = Field(None, max_length=50)
    channel: str | None = Field(None, description="A channel id; or give `users`")
    users: list[str] | None = Field(
        None, min_length=1, max_length=8, description="Opens a DM or group DM with these users"
    )
    thread_ts: str | None = None

    @model_validator(mode="after")
    def _target_and_content(self) -> Self:
        if (self.channel is None) == (self.users is None):
            raise ValueError("give exactly one of channel and users")
        if self.text is None and self.blocks is None:
            raise ValueError("give text or blocks")
        return self


class PostedMessage(BaseModel):
    channel: str
    ts: str
    permalink: str | None


class MethodCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(pattern=r"^[a-z]+(\.[a-zA-Z]+)+$", examples=["conversations.info"])
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_token(self) -> Self:
        if "token" in self.params:
            raise ValueError("params cannot set the token; the community's bot token is used")
        return self


class MethodResult(BaseModel):
    response: dict[str, Any]


EmojiFamily = Literal["numbers", "hearts", "flowers"]
DEFAULT_INELIGIBLE_MESSAGE = "You are not eligible to vote in this poll."


class VoteAudience(BaseModel):
    """Who votes, shared by both vote kinds: a channel, or a group DM with eligible voters."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = None
    eligible_voters: list[str] | None = Field(None, min_length=1, max_length=8)
    ineligible_voters: list[str] = Field(default_factory=list)
    ineligible_voter_message: str = DEFAULT_INELIGIBLE_MESSAGE
    closing_at: AwareDatetime | None = Field(
        None, description="Closes by itself at this time (with a time zone)"
    )

    @model_validator(mode="after")
    def _somewhere(self) -> Self:
        if self.channel is None and not self.eligible_voters:
            raise ValueError("give a channel or eligible_voters")
        return self


class EmojiVoteParams(VoteAudience):
    title: str = Field(min_length=1, max_length=150)
    poll_type: Literal["boolean", "choice"]
    options: list[Annotated[str, Field(min_length=1, max_length=75)]] | None = Field(
        None, max_length=10
    )
    details: str | None = Field(None, max_length=3000)
    emoji_family: EmojiFamily = "numbers"

    @model_validator(mode="after")
    def _options(self) -> Self:
        if self.poll_type == "choice" and not self.options:
            raise ValueError("a choice poll needs options")
        if self.options and len(set(self.options)) != len(self.options):
            raise ValueError("options must be distinct")
        return self

    def choices(self) -> list[str]:
        return ["Yes", "No"] if self.poll_type == "boolean" else list(self.options or [])


class OptionVotes(BaseModel):
    count: int
    users: list[str]


class EmojiVoteOutcome(BaseModel):
    votes: dict[str, OptionVotes]
    channel: str | None = None
    message_ts: str | None = None


class AdvancedVoteParams(VoteAudience):
    title: str = Field(min_length=1, max_length=150)
    candidates: list[Annotated[str, Field(min_length=1, max_length=75)]] = Field(
        min_length=1, max_length=20
    )
    options: list[Annotated[str, Field(min_length=1, max_length=75)]] = Field(
        min_length=1, max_length=20
    )
    details: str | None = Field(None, max_length=3000)


class AdvancedVoteOutcome(BaseModel):
    votes: dict[str, dict[str, str]] = Field(description="user → candidate → chosen option")
    channel: str | None = None
    message_ts: str | None = None
