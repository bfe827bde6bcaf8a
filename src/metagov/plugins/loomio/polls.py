"""The Loomio ``poll`` process: a Loomio poll of any type, followed until Loomio closes it.

The outcome is read from Loomio, never counted here: again whenever a webhook names the poll
(Loomio's chatbot sends one per vote when it is set to), and every ``update_interval`` in case a
webhook was lost or none is set up. Loomio's API has no way to close a poll early, so the process
is not closable; it completes when Loomio reports the poll closed (its closing time passed, or
someone closed it in Loomio).
"""

from __future__ import annotations

from datetime import timedelta

from metagov.plugins.loomio.client import (
    client,
    key_for_group,
    poll_view,
    subgroup_key,
)
from metagov.plugins.loomio.hooks import read_hint
from metagov.plugins.loomio.schemas import LoomioConfig, PollOutcome, PollParams, PollView
from metagov.plugins.sdk import GovernanceProcess, ProcessContext, WebhookRequest

Ctx = ProcessContext[LoomioConfig, PollOutcome]


def listen_key(poll_key: str) -> str:
    """The listen key of the process following the poll ``poll_key`` (webhooks name polls by
    key, in their ``/p/<key>`` links)."""
    return f"poll:{poll_key}"


class LoomioPoll(GovernanceProcess[LoomioConfig, PollParams, PollOutcome]):
    """A Loomio poll (proposal, poll, count, score, ranked_choice, meeting or dot_vote),
    followed until Loomio closes it."""

    slug = "poll"
    params_model = PollParams
    outcome_model = PollOutcome
    update_interval = timedelta(minutes=5)
    closable = False
    not_closable_reason = (
        "Loomio's API cannot close a poll early: it closes at its closing_at, or when someone "
        "closes it in Loomio"
    )

    async def start(self, ctx: Ctx, params: PollParams) -> None:
        api_key, group_key = subgroup_key(ctx, params.subgroup)
        records = await client(ctx, api_key).create_poll(params.loomio_fields())
        view = poll_view(ctx.config.server_url, records)
        ctx.process_state.set("poll", {"id": view.id, "key": view.key, "group_key": group_key})
        ctx.url = view.url
        # Informative only: a process that is not closable keeps polling past its deadline.
        ctx.closing_at = params.closing_at
        ctx.listen(str(view.id), listen_key(view.key))
        _record(ctx, view)

    async def update(self, ctx: Ctx, params: PollParams) -> None:
        await _refresh(ctx)

    async def receive_webhook(self, ctx: Ctx, params: PollParams, webhook: WebhookRequest) -> None:
        hint = read_hint(webhook)
        saved = ctx.process_state.get("poll") or {}
        if hint is not None and saved.get("key") in hint.poll_keys:
            await _refresh(ctx)


async def _refresh(ctx: Ctx) -> None:
    saved = ctx.process_state.get("poll") or {}
    api_key = key_for_group(ctx, saved.get("group_key"))
    if api_key is None:
        ctx.fail(
            "the API key of the poll's subgroup is no longer configured",
            subgroup=saved.get("group_key"),
        )
        return
    records = await client(ctx, api_key).poll(str(saved["key"]))
    _record(ctx, poll_view(ctx.config.server_url, records))


def _record(ctx: Ctx, view: PollView) -> None:
    outcome = PollOutcome.model_validate(view.model_dump(include=set(PollOutcome.model_fields)))
    if view.closed_at:
        ctx.complete(outcome)
    else:
        ctx.set_outcome(outcome)
