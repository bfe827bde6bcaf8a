"""The ``vote`` process: a message with one button per option in a channel of the community's
server.

A click reaches the gateway as a signed ``MESSAGE_COMPONENT`` interaction. Discord wants an answer
within three seconds, so the endpoint answers at once with a deferred message update and this
process does the rest in a job: it records the vote (one per user, who may switch) and rewrites the
message through the interaction's follow-up webhook, or tells an ineligible user, privately, that
they cannot vote. Interaction tokens expire after 15 minutes, so closing the vote (which removes the
buttons and shows the tally) goes through the bot token instead.
"""

from __future__ import annotations

from typing import Any

from metagov.plugins.discord.access import ensure_channel
from metagov.plugins.discord.client import (
    EXPIRED_INTERACTION,
    DiscordApiError,
    DiscordClient,
    client_for,
)
from metagov.plugins.discord.interactions import (
    EPHEMERAL,
    component_message_id,
    invoker,
    mapping,
    parse,
)
from metagov.plugins.discord.schemas import DiscordConfig, OptionVotes, VoteOutcome, VoteParams
from metagov.plugins.sdk import GovernanceProcess, ProcessContext, WebhookRequest

Ctx = ProcessContext[DiscordConfig, VoteOutcome]

BUTTON_PREFIX = "metagov-vote"
BOOLEAN_EMOJI = ("👍", "👎")
PRIMARY, SECONDARY = 1, 2
ACTION_ROW, BUTTON = 1, 2
# Discord's JSON codes for a message the bot can no longer edit: Unknown Channel, Unknown Message,
# Missing Access. Closing still completes the vote then.
MESSAGE_GONE = frozenset({10003, 10008, 50001})
OPEN_FOOTER = "Click a button to vote. You can change your vote until the vote closes."
CLOSED_FOOTER = "Voting has closed."


def message_url(guild_id: str, channel_id: str, message_id: str) -> str:
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def render(
    params: VoteParams, votes: dict[str, OptionVotes], *, closed: bool = False
) -> dict[str, Any]:
    """The vote's message: an embed with the title and details, and a button per option showing
    its count; once closed, the tally instead of the buttons."""
    choices = params.choices()
    counts = {option: votes[option].count if option in votes else 0 for option in choices}
    embed: dict[str, Any] = {"title": params.title}
    lines = [params.details] if params.details else []
    if params.closing_at is not None and not closed:
        lines.append(f"Closes <t:{int(params.closing_at.timestamp())}:R>.")
    if lines:
        embed["description"] = "\n\n".join(lines)
    components: list[dict[str, Any]] = []
    if closed:
        embed["fields"] = [
            {
                "name": _named(params, index, option),
                "value": f"{counts[option]} vote{'' if counts[option] == 1 else 's'}",
                "inline": True,
            }
            for index, option in enumerate(choices)
        ]
        embed["footer"] = {"text": CLOSED_FOOTER}
    else:
        embed["footer"] = {"text": OPEN_FOOTER}
        buttons = [
            _button(params, index, option, counts[option]) for index, option in enumerate(choices)
        ]
        components = [
            {"type": ACTION_ROW, "components": buttons[start : start + 5]}
            for start in range(0, len(buttons), 5)
        ]
    return {"embeds": [embed], "components": components, "allowed_mentions": {"parse": []}}


def _named(params: VoteParams, index: int, option: str) -> str:
    return f"{BOOLEAN_EMOJI[index]} {option}" if params.poll_type == "boolean" else option


def _button(params: VoteParams, index: int, option: str, count: int) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": BUTTON,
        "style": PRIMARY if params.poll_type == "choice" else SECONDARY,
        "custom_id": f"{BUTTON_PREFIX}:{index}",
        "label": f"{option} ({count})",
    }
    if params.poll_type == "boolean":
        button["emoji"] = {"name": BOOLEAN_EMOJI[index]}
    return button


def _clicked(params: VoteParams, interaction: dict[str, Any]) -> str | None:
    """The option whose button was clicked, if it is one of ours."""
    custom_id = str(mapping(interaction.get("data")).get("custom_id", ""))
    prefix, _, index = custom_id.partition(":")
    choices = params.choices()
    if prefix != BUTTON_PREFIX or not index.isdigit() or int(index) >= len(choices):
        return None
    return choices[int(index)]


def _expired(exc: DiscordApiError) -> bool:
    return exc.discord_code in EXPIRED_INTERACTION or exc.status in (401, 404)


class Vote(GovernanceProcess[DiscordConfig, VoteParams, VoteOutcome]):
    """A vote with one button per option; one vote per person, which they may change."""

    slug = "vote"
    params_model = VoteParams
    outcome_model = VoteOutcome

    async def start(self, ctx: Ctx, params: VoteParams) -> None:
        client = client_for(ctx.http, ctx.settings)
        await ensure_channel(ctx, client, params.channel)
        votes = {option: OptionVotes(count=0, users=[]) for option in params.choices()}
        posted = await client.bot(
            "POST", f"/channels/{params.channel}/messages", json=render(params, votes)
        )
        message_id = str(posted["id"])
        channel = str(posted.get("channel_id") or params.channel)
        url = message_url(ctx.config.guild_id, channel, message_id)
        ctx.url = url
        ctx.closing_at = params.closing_at
        ctx.process_state.set("channel", channel)
        ctx.process_state.set("message_id", message_id)
        ctx.listen(message_id)
        ctx.set_outcome(VoteOutcome(votes=votes, channel=channel, message_id=message_id, url=url))

    async def receive_webhook(self, ctx: Ctx, params: VoteParams, webhook: WebhookRequest) -> None:
        interaction = parse(webhook)
        if interaction is None or ctx.outcome is None:
            return
        if component_message_id(interaction) != ctx.process_state.get("message_id"):
            return  # a click on another message
        option = _clicked(params, interaction)
        user = str(invoker(interaction).get("id") or "")
        if option is None or not user:
            return
        client = client_for(ctx.http, ctx.settings)
        application_id = str(interaction.get("application_id", ""))
        token = str(interaction.get("token", ""))
        if params.eligible_voters is not None and user not in params.eligible_voters:
            await _tell(ctx, client, application_id, token, params.ineligible_voter_message)
            return
        if user in ctx.outcome.votes[option].users:
            return  # the same vote again: nothing changes
        ballots = {
            name: [u for u in tally.users if u != user] for name, tally in ctx.outcome.votes.items()
        }
        ballots[option].append(user)
        tallies = {name: OptionVotes(count=len(us), users=us) for name, us in ballots.items()}
        ctx.set_outcome(ctx.outcome.model_copy(update={"votes": tallies}))
        await _show(ctx, client, application_id, token, render(params, tallies))

    async def close(self, ctx: Ctx, params: VoteParams) -> None:
        outcome = ctx.outcome or VoteOutcome(
            votes={option: OptionVotes(count=0, users=[]) for option in params.choices()}
        )
        channel, message_id = ctx.process_state.get("channel"), ctx.process_state.get("message_id")
        if channel and message_id:
            client = client_for(ctx.http, ctx.settings)
            try:
                await client.bot(
                    "PATCH",
                    f"/channels/{channel}/messages/{message_id}",
                    json=render(params, outcome.votes, closed=True),
                )
            except DiscordApiError as exc:
                if exc.discord_code not in MESSAGE_GONE:
                    raise
                ctx.log.warning("the vote's message could not be closed: %s", exc.message)
        ctx.complete(outcome)


async def _show(
    ctx: Ctx, client: DiscordClient, application_id: str, token: str, body: dict[str, Any]
) -> None:
    """Rewrite the vote's message through the click's follow-up webhook (the answer Discord
    waits for after a deferred update); through the bot if the click's token has expired, as when
    the job ran late."""
    try:
        await client.interaction("PATCH", application_id, token, "/messages/@original", json=body)
        return
    except DiscordApiError as exc:
        if not _expired(exc):
            raise
    channel, message_id = ctx.process_state.get("channel"), ctx.process_state.get("message_id")
    await client.bot("PATCH", f"/channels/{channel}/messages/{message_id}", json=body)


async def _tell(
    ctx: Ctx, client: DiscordClient, application_id: str, token: str, text: str
) -> None:
    """A follow-up message only the clicking user sees. Skipped if the click's token expired:
    the user has long stopped waiting for it."""
    try:
        await client.interaction(
            "POST",
            application_id,
            token,
            json={"content": text, "flags": EPHEMERAL, "allowed_mentions": {"parse": []}},
        )
    except DiscordApiError as exc:
        if not _expired(exc):
            raise
        ctx.log.info("an ineligible voter was not told: the interaction expired")
