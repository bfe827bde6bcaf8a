"""Config, parameters and result of the TSC plugin.

Ids become one segment of the server's URL path, so they are limited to characters that cannot
leave it (no ``/``, no ``..``).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("give an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("the server URL cannot have a query or a fragment")
    return value.rstrip("/")


Id = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:~-]*$", examples=["42"]),
]


class TscConfig(BaseModel):
    """Where the community's TSC server is."""

    model_config = ConfigDict(extra="forbid")

    server_url: Annotated[str, AfterValidator(_http_url)] = Field(
        min_length=8,
        max_length=500,
        description="Base URL of the server; records are read from {server_url}/api/...",
        examples=["https://tsc.example.org"],
    )


class UserId(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id


class ContractId(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contract_id: Id


class ExecutionId(BaseModel):
    model_config = ConfigDict(extra="forbid")

    execution_id: Id


class AgreementId(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agreement_id: Id


class TscRecord(BaseModel):
    """The server's JSON object for the record, as it sent it."""

    model_config = ConfigDict(extra="allow")
