"""``ballot``: a test plugin for a pretend polling platform at ``https://ballot.test/api``, which
uses the parts of the SDK that real platforms need and the other test plugins do not:

- credentials that expire: ``initialize`` trades the configured refresh token for an access
  token (``ctx.update_secrets``), and ``refresh_credentials`` renews it; the platform answers 401
  to a stale one (``CredentialsRejected``);
- unsigned webhooks carrying a secret token in the hook URL (``check_url_token``), which is never
  stored (``webhook_secret_params``), and a generated token shown once (``ctx.tell_driver``);
- an immediate reply to "interaction" webhooks, the rest handled in the job;
- correlation: a poll listens to its poll id, and a webhook reaches only the polls it names;
- suspension: a ``paused`` webhook suspends the instance, a ``resumed`` one resumes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from metagov.plugins.sdk import (
    AuthType,
    CredentialsRejected,
    GovernanceProcess,
    Plugin,
    PluginContext,
    ProcessContext,
    UpstreamError,
    WebhookAccepted,
    WebhookReply,
    WebhookRequest,
    WebhookScope,
    action,
    check_url_token,
)

API = "https://ballot.test/api"


class BallotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space_id: str = Field(min_length=1)
    refresh_token: SecretStr
    access_token: SecretStr | None = None
    webhook_token: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(16)))


class Nothing(BaseModel):
    pass


class Me(BaseModel):
    name: str


class PollParams(BaseModel):
    poll_id: str = Field(min_length=1)


class PollOutcome(BaseModel):
    votes: int


Ctx = PluginContext[BallotConfig]


async def _mint(ctx: Ctx) -> None:
    """Trade the refresh token for an access token that lasts an hour."""
    try:
        response = await ctx.http.post(
            f"{API}/token", data={"refresh_token": ctx.config.refresh_token.get_secret_value()}
        )
    except httpx.HTTPError:
        raise UpstreamError("ballot could not be reached") from None
    granted = response.json()
    ctx.update_secrets(
        {"access_token": granted["access_token"]},
        expires_at=datetime.now(UTC) + timedelta(seconds=int(granted["expires_in"])),
    )


class Poll(GovernanceProcess[BallotConfig, PollParams, PollOutcome]):
    """Counts the votes ballot reports for one poll."""

    slug = "poll"
    params_model = PollParams
    outcome_model = PollOutcome

    async def start(
        self, ctx: ProcessContext[BallotConfig, PollOutcome], params: PollParams
    ) -> None:
        ctx.listen(f"poll:{params.poll_id}")
        ctx.set_outcome(PollOutcome(votes=0))

    async def receive_webhook(
        self,
        ctx: ProcessContext[BallotConfig, PollOutcome],
        params: PollParams,
        webhook: WebhookRequest,
    ) -> None:
        body = webhook.json()
        if body.get("type") == "vote" and ctx.outcome is not None:
            ctx.set_outcome(PollOutcome(votes=ctx.outcome.votes + 1))


class BallotPlugin(Plugin[BallotConfig]):
    """A pretend polling platform with expiring credentials and unsigned webhooks."""

    name = "ballot"
    auth_type = AuthType.API_KEY
    config_model = BallotConfig
    community_platform_id_field = "space_id"
    processes = (Poll,)
    webhooks = WebhookScope.INSTANCE
    webhook_secret_params = frozenset({"token"})

    async def initialize(self, ctx: Ctx) -> None:
        await _mint(ctx)
        ctx.tell_driver(hook_url=ctx.hook_url(token=ctx.config.webhook_token.get_secret_value()))

    async def refresh_credentials(self, ctx: Ctx) -> None:
        await _mint(ctx)

    @action("whoami", description="The platform account the instance acts as")
    async def whoami(self, ctx: Ctx, params: Nothing) -> Me:
        token = ctx.config.access_token
        headers = {"Authorization": f"Bearer {token.get_secret_value() if token else ''}"}
        response = await ctx.http.get(f"{API}/me", headers=headers)
        if response.status_code == 401:
            raise CredentialsRejected("ballot refused the access token")
        return Me(name=response.json()["name"])

    async def verify_webhook(
        self, request: WebhookRequest, config: BallotConfig | None
    ) -> WebhookAccepted:
        assert config is not None
        check_url_token(request, config.webhook_token)
        body = request.json()
        reply = WebhookReply({"type": "deferred"}) if body.get("type") == "interaction" else None
        return WebhookAccepted(delivery_id=str(body["id"]), reply=reply)

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str] | None:
        poll = webhook.json().get("poll_id")
        return [f"poll:{poll}"] if poll else []

    async def receive_webhook(self, ctx: Ctx, webhook: WebhookRequest) -> None:
        body: dict[str, Any] = webhook.json()
        kind = str(body.get("type"))
        ctx.emit_event(f"ballot.{kind}", {"body": body, "query": dict(webhook.query)})
        if kind == "paused":
            ctx.suspend_instance("the space was paused")
        elif kind == "resumed":
            ctx.resume_instance()
