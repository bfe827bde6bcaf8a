"""Settings, config, parameters and results of the SourceCred plugin."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from metagov.plugins.sdk import PluginError

DEFAULT_PORTS = {"http": 80, "https": 443}


class SourceCredSettings(BaseSettings):
    """Gateway-wide rules for the instances communities may read (``METAGOV_SOURCECRED__*``)."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_SOURCECRED__", extra="ignore")

    allow_http: bool = False
    allow_private_hosts: bool = False
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024)


def normalize_server_url(value: str) -> str:
    """``scheme://host[:port][/path]``, scheme and host lower-case, no default port or trailing
    slash: the instance's ``community_platform_id``."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ValueError("server_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("server_url must be an https:// URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("server_url has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("server_url must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError("server_url must not have a query or a fragment")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def check_reachable_safely(server_url: str, settings: SourceCredSettings) -> None:
    """Refuse clear-text URLs and the gateway's own network (literal private, loopback or
    reserved addresses, ``localhost``) unless the settings allow them."""
    parts = urlsplit(server_url)
    if parts.scheme != "https" and not settings.allow_http:
        raise PluginError(
            "server_url must use https (METAGOV_SOURCECRED__ALLOW_HTTP allows http)",
            code="server_url_not_allowed",
        )
    if settings.allow_private_hosts:
        return
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise PluginError(
            "server_url must not point at this machine", code="server_url_not_allowed"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not address.is_global:
        raise PluginError(
            "server_url must not be a private or reserved address "
            "(METAGOV_SOURCECRED__ALLOW_PRIVATE_HOSTS allows it)",
            code="server_url_not_allowed",
        )


class SourceCredConfig(BaseModel):
    """A SourceCred instance's published site; its ``output/`` files are read from there."""

    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(
        min_length=1,
        max_length=300,
        description="Where the instance is published; `output/…` is read below it",
        examples=["https://sourcecred.example.org"],
    )
    cache_seconds: int = Field(
        300, ge=0, le=86_400, description="How long scores are reused before reading again"
    )
    output: Literal["auto", "credGrainView", "accounts"] = Field(
        "auto",
        description="Which output to read: `auto` tries output/credGrainView (current "
        "SourceCred), then output/accounts.json (written by `sourcecred analysis`)",
    )

    @field_validator("server_url")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_server_url(value)


class UserCredParams(BaseModel):
    """Give exactly one of ``username``, ``id`` and ``alias``."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(
        None, min_length=1, max_length=100, description="The SourceCred identity's name"
    )
    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A platform account id, the last part of one of the identity's aliases "
        "(a Discord user id, a GitHub login…)",
    )
    alias: list[Annotated[str, Field(min_length=1, max_length=300)]] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description="A whole alias address, as the list of its parts (SourceCred separates "
        "them with NUL characters, which JSON bodies here cannot carry)",
        examples=[["sourcecred", "discord", "MEMBER", "user", "140750062325202944"]],
    )

    @model_validator(mode="after")
    def _one(self) -> Self:
        given = [v for v in (self.username, self.id, self.alias) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of username, id and alias")
        return self


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CredValue(BaseModel):
    value: float = Field(description="Cred, as SourceCred computed it")
