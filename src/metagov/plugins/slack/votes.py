"""Slack votes: ``emoji-vote`` (a button per option) and ``advanced-vote`` (a select per
candidate). Clicks arrive as signed ``block_actions`` webhooks and reach the vote whose message
they were made on."""

from __future__ import annotations

import json
from typing import Any

from metagov.plugins.sdk import GovernanceProcess, ProcessContext, WebhookRequest
from metagov.plugins.slack import blocks
from metagov.plugins.slack.client import SlackClient, client_for
from metagov.plugins.slack.schemas import (
    AdvancedVoteOutcome,
    AdvancedVoteParams,
    EmojiVoteOutcome,
    EmojiVoteParams,
    OptionVotes,
    SlackConfig,
    VoteAudience,
)

EmojiCtx = ProcessContext[SlackConfig, EmojiVoteOutcome]
AdvancedCtx = ProcessContext[SlackConfig, AdvancedVoteOutcome]


def interaction(webhook: WebhookRequest) -> dict[str, Any] | None:
    """The ``block_actions`` payload of an interactivity webhook, if that is what this is."""
    if not webhook.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    try:
        payload = json.loads(webhook.form().get("payload", ""))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and payload.get("type") == "block_actions" else None


def _client(ctx: ProcessContext[SlackConfig, Any]) -> SlackClient:
    return client_for(ctx)


async def _post(
    ctx: ProcessContext[SlackConfig, Any], audience: VoteAudience, text: str, body: list[Any]
) -> tuple[str, str]:
    """Post the vote message; returns (channel, ts) and sets the process URL to its permalink."""
    slack = _client(ctx)
    channel = audience.channel
    if channel is None:
        opened = await slack.call(
            "conversations.open", {"users": ",".join(audience.eligible_voters or [])}
        )
        channel = str(opened["channel"]["id"])
    posted = await slack.call(
        "chat.postMessage", {"channel": channel, "text": text, "blocks": body}
    )
    ts = str(posted["ts"])
    link = await slack.call("chat.getPermalink", {"channel": channel, "message_ts": ts})
    ctx.url = link.get("permalink")
    ctx.process_state.set("channel", channel)
    ctx.process_state.set("ts", ts)
    ctx.listen(message_key(channel, ts))
    ctx.closing_at = audience.closing_at
    return channel, ts


def message_key(channel: str, ts: str) -> str:
    """What a vote listens to: clicks on its own message."""
    return f"{channel}:{ts}"


def clicked_message(payload: dict[str, Any]) -> str | None:
    """The listen key of the message an interactivity payload's buttons were clicked on."""
    container = payload.get("container") or {}
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id")
    ts = container.get("message_ts")
    return message_key(str(channel), str(ts)) if channel and ts else None


def _is_ours(ctx: ProcessContext[SlackConfig, Any], payload: dict[str, Any]) -> bool:
    container = payload.get("container") or {}
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id")
    return bool(
        container.get("message_ts") == ctx.process_state.get("ts")
        and channel == ctx.process_state.get("channel")
    )


async def _may_vote(
    ctx: ProcessContext[SlackConfig, Any], audience: VoteAudience, user: str
) -> bool:
    eligible = audience.eligible_voters
    if user in audience.ineligible_voters or (eligible and user not in eligible):
        await _client(ctx).call(
            "chat.postEphemeral",
            {
                "channel": ctx.process_state.get("channel"),
                "user": user,
                "text": audience.ineligible_voter_message,
            },
        )
        return False
    return True


async def _update(ctx: ProcessContext[SlackConfig, Any], text: str, body: list[Any]) -> None:
    await _client(ctx).call(
        "chat.update",
        {
            "channel": ctx.process_state.get("channel"),
            "ts": ctx.process_state.get("ts"),
            "text": text,
            "blocks": body,
        },
    )


class EmojiVote(GovernanceProcess[SlackConfig, EmojiVoteParams, EmojiVoteOutcome]):
    """A vote with one button per option; one vote per person, which they may change."""

    slug = "emoji-vote"
    params_model = EmojiVoteParams
    outcome_model = EmojiVoteOutcome

    async def start(self, ctx: EmojiCtx, params: EmojiVoteParams) -> None:
        votes = {option: OptionVotes(count=0, users=[]) for option in params.choices()}
        channel, ts = await _post(ctx, params, params.title, blocks.emoji_vote(params, votes))
        ctx.set_outcome(EmojiVoteOutcome(votes=votes, channel=channel, message_ts=ts))

    async def receive_webhook(
        self, ctx: EmojiCtx, params: EmojiVoteParams, webhook: WebhookRequest
    ) -> None:
        payload = interaction(webhook)
        if payload is None or not _is_ours(ctx, payload) or ctx.outcome is None:
            return
        user = str((payload.get("user") or {}).get("id", ""))
        choices = params.choices()
        for clicked in payload.get("actions") or []:
            try:
                option = choices[int(clicked.get("value", ""))]
            except (ValueError, IndexError):
                continue
            if not user or not await _may_vote(ctx, params, user):
                return
            votes = {
                name: [u for u in tally.users if u != user]
                for name, tally in ctx.outcome.votes.items()
            }
            votes[option].append(user)
            tallies = {name: OptionVotes(count=len(us), users=us) for name, us in votes.items()}
            ctx.set_outcome(ctx.outcome.model_copy(update={"votes": tallies}))
            await _update(ctx, params.title, blocks.emoji_vote(params, tallies))

    async def close(self, ctx: EmojiCtx, params: EmojiVoteParams) -> None:
        outcome = ctx.outcome or EmojiVoteOutcome(votes={})
        await _update(ctx, params.title, blocks.emoji_vote(params, outcome.votes, closed=True))
        ctx.complete(outcome)


class AdvancedVote(GovernanceProcess[SlackConfig, AdvancedVoteParams, AdvancedVoteOutcome]):
    """Each voter picks one option per candidate (a select menu per candidate)."""

    slug = "advanced-vote"
    params_model = AdvancedVoteParams
    outcome_model = AdvancedVoteOutcome

    async def start(self, ctx: AdvancedCtx, params: AdvancedVoteParams) -> None:
        channel, ts = await _post(ctx, params, params.title, blocks.advanced_vote(params, 0))
        ctx.set_outcome(AdvancedVoteOutcome(votes={}, channel=channel, message_ts=ts))

    async def receive_webhook(
        self, ctx: AdvancedCtx, params: AdvancedVoteParams, webhook: WebhookRequest
    ) -> None:
        payload = interaction(webhook)
        if payload is None or not _is_ours(ctx, payload) or ctx.outcome is None:
            return
        user = str((payload.get("user") or {}).get("id", ""))
        votes = {voter: dict(choices) for voter, choices in ctx.outcome.votes.items()}
        changed = False
        for selected in payload.get("actions") or []:
            try:
                candidate = params.candidates[int(str(selected["action_id"]).split(":")[1])]
                option = params.options[int(selected["selected_option"]["value"])]
            except (KeyError, ValueError, IndexError, TypeError):
                continue
            if not user or not await _may_vote(ctx, params, user):
                return
            votes.setdefault(user, {})[candidate] = option
            changed = True
        if changed:
            ctx.set_outcome(ctx.outcome.model_copy(update={"votes": votes}))
            await _update(ctx, params.title, blocks.advanced_vote(params, len(votes)))

    async def close(self, ctx: AdvancedCtx, params: AdvancedVoteParams) -> None:
        outcome = ctx.outcome or AdvancedVoteOutcome(votes={})
        body = blocks.advanced_vote(params, len(outcome.votes), closed=True)
        await _update(ctx, params.title, body)
        ctx.complete(outcome)
