"""Settings, config, parameters and result of the Mailgun plugin.

``send-mail`` takes the same parameters as the SendGrid plugin's, so a Driver can move a
community from one provider to the other without changing its calls.
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REGION_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
MAX_RECIPIENTS = 1000

_ADDRESS = re.compile(r"^[^@\s<>\"(),;:]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def _email(value: str) -> str:
    """An address, bare (``ana@example.org``) or with a display name (``Ana <ana@example.org>``).
    Line breaks are refused: they would let a value add mail headers."""
    if "\r" in value or "\n" in value:
        raise ValueError("an email address cannot contain a line break")
    _, address = parseaddr(value)
    if not _ADDRESS.match(address):
        raise ValueError(f"not an email address: {value!r}")
    return value.strip()


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("cannot contain a line break")
    return value


EmailAddress = Annotated[
    str,
    Field(min_length=3, max_length=320, examples=["Ana <ana@example.org>"]),
    AfterValidator(_email),
]


class MailgunSettings(BaseSettings):
    """App-wide settings (``METAGOV_MAILGUN__*``): only where Mailgun's API is."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_MAILGUN__", extra="ignore")

    api_url: str | None = Field(
        None,
        description="Base URL of the API for every region (a fake Mailgun in tests); by default "
        "each instance's region picks https://api.mailgun.net or https://api.eu.mailgun.net",
    )


class MailgunConfig(BaseModel):
    """A community's Mailgun sending domain and API key."""

    model_config = ConfigDict(extra="forbid")

    domain: str = Field(
        min_length=3,
        max_length=253,
        pattern=r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
        description="The sending domain, as set up in Mailgun (e.g. mg.example.org)",
        examples=["mg.example.org"],
    )
    api_key: SecretStr = Field(min_length=1, max_length=200)
    region: Literal["us", "eu"] = Field("us", description="Where the domain was created")
    default_from: EmailAddress | None = Field(
        None, description="The sender when send-mail gives no `from`"
    )
    test_mode: bool = Field(
        False, description="Mailgun accepts the messages but does not deliver them"
    )


class SendMail(BaseModel):
    """One message, to one or several recipients (all of them in its To: header)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: EmailAddress | None = Field(
        None, alias="from", description="The sender; the config's default_from if left out"
    )
    to: (
        EmailAddress | Annotated[list[EmailAddress], Field(min_length=1, max_length=MAX_RECIPIENTS)]
    ) = Field(description="One address, or a list of 1 to 1000")
    subject: Annotated[str, AfterValidator(_one_line)] = Field(min_length=1, max_length=998)
    text: str | None = Field(None, max_length=1_000_000, description="The plain-text body")
    html: str | None = Field(None, max_length=1_000_000, description="The HTML body")
    reply_to: EmailAddress | None = None

    @model_validator(mode="after")
    def _a_body(self) -> Self:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        return self

    def recipients(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)


class MailSent(BaseModel):
    """The provider accepted the message for delivery."""

    id: str | None = Field(description="The provider's message id")
    message: str = Field(description="The provider's answer")
