"""Settings, config, parameters and result of the SendGrid plugin.

``send-mail`` takes exactly the parameters of the Mailgun plugin's (a test compares the two
schemas), so a Driver can move a community from one provider to the other without changing its
calls. The models are repeated here rather than imported so that each plugin stands alone.
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def split_address(value: str) -> dict[str, str]:
    """SendGrid's ``{email, name?}`` for ``Ana <ana@example.org>``."""
    name, address = parseaddr(value)
    return {"email": address, "name": name} if name else {"email": address}


class SendGridSettings(BaseSettings):
    """App-wide settings (``METAGOV_SENDGRID__*``): only where SendGrid's API is."""

    model_config = SettingsConfigDict(env_prefix="METAGOV_SENDGRID__", extra="ignore")

    api_url: str = Field(
        "https://api.sendgrid.com",
        description="Base URL of the v3 API; https://api.eu.sendgrid.com for EU-pinned "
        "subusers, a fake SendGrid in tests",
    )


class SendGridConfig(BaseModel):
    """A community's SendGrid API key and sender."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr = Field(min_length=1, max_length=200)
    default_from: EmailAddress | None = Field(
        None, description="The sender when send-mail gives no `from` (a verified sender)"
    )
    sandbox_mode: bool = Field(
        False, description="SendGrid validates the messages but does not deliver them"
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
