"""Config of the generic webhook plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: SecretStr = Field(
        description="Shared secret: a Standard Webhooks `whsec_…` secret, or any string for "
        "GitHub-style `X-Hub-Signature-256`",
        min_length=8,
    )
    event_type_field: str | None = Field(
        None,
        description="Dotted path of the body field that names the event type (e.g. `action` or "
        "`event.type`); without it, the `X-GitHub-Event` header or `webhook` is used",
        min_length=1,
        max_length=200,
        pattern=r"\S",
    )
    source_name: str = Field(
        "webhook",
        description="An id for this sender, if a community has several",
        min_length=1,
        max_length=100,
        pattern=r"\S",
    )
