"""Settings, config, parameters and results of the Open Collective plugin."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

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

SCOPES = ("account", "expenses", "conversations", "webhooks")


class OpenCollectiveSettings(BaseSettings):
    """The gateway's Open Collective OAuth app, shared by every community
    (``METAGOV_OPENCOLLECTIVE__*``)."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_OPENCOLLECTIVE__", extra="ignore")

    client_id: str | None = None
    client_secret: SecretStr | None = None
    api_url: str = Field(
        "https://api.opencollective.com",
        description="The API: GraphQL at /graphql/v2, OAuth tokens at /oauth/token",
    )
    oauth_url: str = Field(
        "https://opencollective.com",
        description="The website: the authorize page (/oauth/authorize) and links to collectives",
    )
    scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(SCOPES))

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_url", "oauth_url")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        return value.rstrip("/")


def _visible_ascii(cls: Any, value: SecretStr | None) -> SecretStr | None:
    """Tokens travel in HTTP headers: printable ASCII without spaces."""
    if value is not None:
        raw = value.get_secret_value()
        if not (raw.isascii() and raw.isprintable()) or " " in raw:
            raise ValueError("must be printable ASCII without spaces")
    return value


def _new_token() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(32))


class OpenCollectiveConfig(BaseModel):
    """A community's collective: written by the OAuth install, or by hand with a personal
    token."""

    model_config = ConfigDict(extra="forbid")

    collective_slug: str = Field(
        min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
    )
    access_token: SecretStr = Field(min_length=1, max_length=2000)
    token_type: Literal["personal", "oauth"] = Field(
        "personal",
        description="'personal': a personal token (sent as Personal-Token); 'oauth': a token "
        "the OAuth install obtained (sent as Authorization: Bearer)",
    )
    refresh_token: SecretStr | None = Field(None, max_length=2000)
    webhook_token: SecretStr = Field(
        default_factory=_new_token,
        min_length=16,
        max_length=200,
        description="Secret carried by the hook URL (?token=); generated when omitted",
    )

    _tokens = field_validator("access_token", "refresh_token", "webhook_token")(_visible_ascii)


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListMembers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=100_000)


class AccountView(BaseModel):
    id: str
    slug: str | None = None
    name: str | None = None
    type: str | None = None


class MemberView(BaseModel):
    id: str
    role: str | None = None
    since: str | None = None
    account: AccountView | None = None


class Members(BaseModel):
    total_count: int
    members: list[MemberView]


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=255)
    html: str = Field(min_length=1, max_length=100_000, description="The first comment's body")
    tags: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=30
    )


class ConversationView(BaseModel):
    id: str
    slug: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    created_at: str | None = None
    comments_count: int | None = None
    reactions: dict[str, int] = Field(default_factory=dict)
    url: str


class ExpenseView(BaseModel):
    id: str
    legacy_id: int
    description: str | None = None
    amount: int | None = Field(None, description="In cents of currency")
    currency: str | None = None
    type: str | None = None
    status: str | None = None
    created_at: str | None = None
    tags: list[str] | None = None
    account: AccountView | None = None
    payee: AccountView | None = None
    created_by: AccountView | None = None
    url: str


class CreateComment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")
    html: str = Field(min_length=1, max_length=100_000)


class CommentView(BaseModel):
    id: str
    created_at: str | None = None
    html: str | None = None


class ProcessExpense(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expense_id: str | int = Field(
        description="The expense's id, or its number (legacy id) as in its URL /expenses/<n>"
    )
    action: Literal["APPROVE", "UNAPPROVE", "REJECT"]
    message: str | None = Field(None, max_length=5000, description="Shown with the decision")

    @field_validator("expense_id")
    @classmethod
    def _reference(cls, value: str | int) -> str | int:
        if isinstance(value, int):
            if value <= 0 or value > 2**31 - 1:
                raise ValueError("an expense number is a positive 32-bit integer")
            return value
        if not value or len(value) > 100 or not value.replace("-", "").isalnum():
            raise ValueError("an expense id is letters, digits and dashes")
        return int(value) if value.isdigit() and int(value) < 2**31 else value

    def reference(self) -> dict[str, Any]:
        """Open Collective's ExpenseReferenceInput."""
        if isinstance(self.expense_id, int):
            return {"legacyId": self.expense_id}
        return {"id": self.expense_id}


class VoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=240)
    details: str | None = Field(None, max_length=50_000)
    closing_at: AwareDatetime | None = Field(
        None, description="Closes by itself at this time (with a time zone)"
    )

    @model_validator(mode="after")
    def _not_closed_already(self) -> VoteParams:
        if self.title.startswith("[CLOSED]"):
            raise ValueError("the title must not start with [CLOSED]")
        return self


class Votes(BaseModel):
    yes: int
    no: int


class VoteOutcome(BaseModel):
    votes: Votes
    url: str
