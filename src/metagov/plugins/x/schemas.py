"""Settings, config, parameters, results and events of the X plugin (and of its ``twitter``
alias, which shares them)."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

APP_SCOPES = (
    "tweet.read",
    "tweet.write",
    "users.read",
    "dm.read",
    "dm.write",
    "offline.access",
)
USER_SCOPES = ("tweet.read", "users.read")

UserId = Annotated[
    str, Field(min_length=1, max_length=20, pattern=r"^\d+$", examples=["2244994945"])
]
PostId = Annotated[
    str, Field(min_length=1, max_length=20, pattern=r"^\d+$", examples=["1445880548472328192"])
]
Username = Annotated[
    str,
    Field(
        min_length=1,
        max_length=15,
        pattern=r"^[A-Za-z0-9_]+$",
        validation_alias=AliasChoices("username", "screen_name"),
        examples=["XDevelopers"],
    ),
]


class XSettings(BaseSettings):
    """The X app's credentials, shared by every community (``METAGOV_X__*``)."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_X__", extra="ignore")

    client_id: str | None = None
    client_secret: SecretStr | None = Field(
        None, description="Confidential clients (a Web App) only; public clients have none"
    )
    pkce_secret: SecretStr | None = Field(
        None,
        description="Key from which PKCE verifiers are derived (the client secret if unset)",
    )
    api_url: str = "https://api.x.com"
    authorize_url: str = "https://x.com/i/oauth2/authorize"
    scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(APP_SCOPES))
    user_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(USER_SCOPES))

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("scopes", "user_scopes"):
                if isinstance(data.get(key), str):
                    data[key] = [p for p in data[key].replace(",", " ").split() if p]
        return data


class XConfig(BaseModel):
    """A community's X account, written by the OAuth install (or by hand)."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId = Field(description="The account's numeric id")
    username: str = Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_]+$")
    access_token: SecretStr = Field(min_length=1, max_length=2000)
    refresh_token: SecretStr | None = Field(None, max_length=2000)
    allow_posting: bool = Field(
        False, description="Whether `post` may publish as the account (off until a Driver says so)"
    )
    home_timeline: bool = Field(
        False, description="Also forward the account's home timeline as timeline_tweet events"
    )


class PostParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=25000)
    reply_to: PostId | None = Field(None, description="Reply to this post")


class Posted(BaseModel):
    id: str
    text: str
    url: str


class SendDmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = Field(None, description="The recipient's id; or give username")
    username: (
        Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_]+$")] | None
    ) = None
    text: str = Field(min_length=1, max_length=10000)

    @model_validator(mode="after")
    def _one_recipient(self) -> Self:
        if (self.user_id is None) == (self.username is None):
            raise ValueError("give exactly one of user_id and username")
        return self


class DmSent(BaseModel):
    dm_conversation_id: str
    dm_event_id: str


class GetUserParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username


class XUser(BaseModel):
    id: str
    name: str
    username: str


class UserIdResult(BaseModel):
    user_id: str


class PostEvent(BaseModel):
    """The ``data`` of ``mention`` and ``timeline_tweet`` events."""

    id: str
    text: str
    url: str
    author_id: str | None
    author_username: str | None
    author_name: str | None
    created_at: str | None
    conversation_id: str | None
    in_reply_to_user_id: str | None
