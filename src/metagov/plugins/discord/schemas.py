"""Settings, config, parameters and outcomes of the Discord plugin."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from metagov.plugins.discord.ratelimits import RateGate

# VIEW_CHANNEL (1 << 10) + SEND_MESSAGES (1 << 11) + EMBED_LINKS (1 << 14)
# + READ_MESSAGE_HISTORY (1 << 16) + ADD_REACTIONS (1 << 6): what the actions and the vote need.
DEFAULT_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 16) | (1 << 6)
INSTALL_SCOPES = ("bot", "applications.commands")
LOGIN_SCOPES = ("identify",)
# REST routes the `discord.method` action may call. `{guild}` must be the community's own server,
# `{channel}` a channel of it, `{application}` this app; `{id}` is any snowflake and `{emoji}` one
# path segment.
DEFAULT_ROUTES = (
    "GET /guilds/{guild}",
    "GET /guilds/{guild}/channels",
    "GET /guilds/{guild}/roles",
    "GET /guilds/{guild}/members",
    "GET /guilds/{guild}/members/{id}",
    "GET /channels/{channel}",
    "GET /channels/{channel}/messages",
    "GET /channels/{channel}/messages/{id}",
    "POST /channels/{channel}/messages",
    "PATCH /channels/{channel}/messages/{id}",
    "DELETE /channels/{channel}/messages/{id}",
    "GET /channels/{channel}/messages/{id}/reactions/{emoji}",
    "PUT /channels/{channel}/messages/{id}/reactions/{emoji}/@me",
    "POST /channels/{channel}/threads",
    "POST /channels/{channel}/messages/{id}/threads",
    "GET /users/{id}",
    "GET /applications/{application}/guilds/{guild}/commands",
)
DEFAULT_COMMAND_REPLY = "Received `/{command}`."
DEFAULT_INELIGIBLE_MESSAGE = "You are not eligible to vote in this poll."

Snowflake = Annotated[str, Field(pattern=r"^[0-9]{1,20}$", examples=["1087654321098765432"])]


@functools.lru_cache(maxsize=8)
def _public_key(hex_key: str) -> Ed25519PublicKey | None:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except ValueError:
        return None


class DiscordSettings(BaseSettings):
    """The Discord application's credentials, shared by every community
    (``METAGOV_DISCORD__*``). The bot belongs to the application, so its token is app-wide too."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_DISCORD__", extra="ignore")

    client_id: str | None = None
    client_secret: SecretStr | None = None
    bot_token: SecretStr | None = None
    public_key: str | None = None
    api_url: str = "https://discord.com/api/v10"
    oauth_url: str = "https://discord.com/oauth2/authorize"
    permissions: int = Field(DEFAULT_PERMISSIONS, ge=0)
    method_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ROUTES)
    )
    command_reply: str = DEFAULT_COMMAND_REPLY

    # What Discord said about rate limits, kept with the credentials they apply to.
    _gate: RateGate = PrivateAttr(default_factory=RateGate)

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method_allowlist"), str):
            parts = data["method_allowlist"].split(",")
            data["method_allowlist"] = [p.strip() for p in parts if p.strip()]
        return data

    @property
    def gate(self) -> RateGate:
        return self._gate

    def verify_key(self) -> Ed25519PublicKey | None:
        """The application's Ed25519 public key, or None if it is unset or not 32 bytes of hex."""
        if not self.public_key:
            return None
        return _public_key(self.public_key.strip().lower())


class DiscordConfig(BaseModel):
    """A community's Discord server, written by the OAuth install."""

    model_config = ConfigDict(extra="forbid")

    guild_id: Snowflake = Field(description="The server (guild) id")
    guild_name: str = Field("", max_length=100)
    install_proof: SecretStr = Field(
        description="Written by the OAuth install: proves that the server's admin added the bot "
        "for this community (HMAC-SHA256 of `discord-install:{guild_id}` with the client secret)"
    )


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Snowflake = Field(description="A channel id of the community's server")
    text: str | None = Field(None, min_length=1, max_length=2000)
    embeds: list[dict[str, Any]] | None = Field(None, min_length=1, max_length=10)

    @model_validator(mode="after")
    def _content(self) -> Self:
        if self.text is None and self.embeds is None:
            raise ValueError("give text or embeds")
        return self


class PostedMessage(BaseModel):
    id: str
    channel_id: str
    url: str


class Guild(BaseModel):
    """Discord's guild object (every field Discord sends is kept)."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str


class Channel(BaseModel):
    id: str
    name: str | None = None
    type: int
    parent_id: str | None = None
    position: int | None = None


class Channels(BaseModel):
    channels: list[Channel]


class RegisterCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[-_\w]{1,32}$",
        description="Lowercase; Discord's rules for slash command names",
        examples=["propose"],
    )
    description: str = Field(min_length=1, max_length=100)
    options: list[dict[str, Any]] | None = Field(
        None, max_length=25, description="Discord application command options, as Discord takes"
    )

    @model_validator(mode="after")
    def _lowercase(self) -> Self:
        if self.name != self.name.lower():
            raise ValueError("name must be lowercase")
        return self


class Command(BaseModel):
    """Discord's application command object (every field Discord sends is kept)."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    description: str = ""


class DeleteCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command_id: Snowflake


HttpMethod = Literal["GET", "POST", "PATCH", "PUT", "DELETE"]


class MethodCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: HttpMethod = "GET"
    route: str = Field(
        max_length=300,
        pattern=r"^(/[A-Za-z0-9@._~%:-]+)+$",
        description="A REST route of the allow-list (METAGOV_DISCORD__METHOD_ALLOWLIST), "
        "without the API URL or a query string",
        examples=["/guilds/1087654321098765432/roles"],
    )
    body: dict[str, Any] | list[Any] | None = Field(None, description="The JSON body")
    query: dict[str, str | int | bool] | None = Field(None, description="Query parameters")


class MethodResult(BaseModel):
    status: int
    response: Any = None


class VoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=256)
    poll_type: Literal["boolean", "choice"] = Field(
        "choice", description="`boolean`: 👍 Yes / 👎 No; `choice`: one button per option"
    )
    options: list[Annotated[str, Field(min_length=1, max_length=70)]] | None = Field(
        None, min_length=1, max_length=25
    )
    channel: Snowflake = Field(description="Where the vote is posted (a channel of the server)")
    details: str | None = Field(None, max_length=2000)
    eligible_voters: list[Snowflake] | None = Field(
        None, min_length=1, max_length=1000, description="User ids; everyone if left out"
    )
    ineligible_voter_message: str = Field(DEFAULT_INELIGIBLE_MESSAGE, min_length=1, max_length=2000)
    closing_at: AwareDatetime | None = Field(
        None, description="Closes by itself at this time (with a time zone)"
    )

    @model_validator(mode="after")
    def _options(self) -> Self:
        if self.poll_type == "choice" and not self.options:
            raise ValueError("a choice vote needs options")
        if self.poll_type == "boolean" and self.options:
            raise ValueError("a boolean vote takes no options (they are Yes and No)")
        if self.options and len(set(self.options)) != len(self.options):
            raise ValueError("options must be distinct")
        return self

    def choices(self) -> list[str]:
        return ["Yes", "No"] if self.poll_type == "boolean" else list(self.options or [])


class OptionVotes(BaseModel):
    count: int
    users: list[str]


class VoteOutcome(BaseModel):
    votes: dict[str, OptionVotes]
    channel: str | None = None
    message_id: str | None = None
    url: str | None = None


class SlashCommandEvent(BaseModel):
    """``data`` of a ``slash_command`` event."""

    command: str = Field(description="The command's name, with its subcommand group/subcommand")
    options: dict[str, Any] = Field(description="The options the user gave, by name")
    channel_id: str | None
    guild_id: str
    user: dict[str, Any] = Field(description="`id`, `username`, `global_name` of who used it")
    interaction_id: str
    command_id: str | None
