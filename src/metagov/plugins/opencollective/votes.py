"""The Open Collective ``vote`` process: a conversation tagged ``metagov-vote`` in which people
vote with 👍 or 👎 on its first comment.

Open Collective sends no webhook for reactions, so the count is read every ``update_interval``
(and once more when the vote closes). Closing renames the conversation ``[CLOSED] <title>`` and
posts the tally as a comment. Open Collective only reports how many people reacted, not who.
"""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

from metagov.plugins.opencollective import queries
from metagov.plugins.opencollective.client import client_for
from metagov.plugins.opencollective.schemas import (
    OpenCollectiveConfig,
    VoteOutcome,
    VoteParams,
    Votes,
)
from metagov.plugins.opencollective.views import conversation_view, reactions
from metagov.plugins.sdk import GovernanceProcess, ProcessContext

Ctx = ProcessContext[OpenCollectiveConfig, VoteOutcome]
TAG = "metagov-vote"
YES, NO = "\N{THUMBS UP SIGN}", "\N{THUMBS DOWN SIGN}"
CLOSED = "[CLOSED] "


def _count(found: dict[str, int], emoji: str) -> int:
    # Open Collective's picker sends 👍 with a variation selector (U+FE0F); count both forms.
    return sum(n for key, n in found.items() if key.replace("\ufe0f", "") == emoji)


def tally(conversation: dict[str, Any]) -> Votes:
    found = reactions(conversation)
    return Votes(yes=_count(found, YES), no=_count(found, NO))


def _body(params: VoteParams) -> str:
    details = params.details or ""
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in details.split("\n\n") if p.strip())
    return f"{paragraphs}<p>Vote by reacting to this message with {YES} (yes) or {NO} (no).</p>"


class ConversationVote(GovernanceProcess[OpenCollectiveConfig, VoteParams, VoteOutcome]):
    """A yes/no vote: 👍 and 👎 reactions on a conversation tagged metagov-vote."""

    slug = "vote"
    params_model = VoteParams
    outcome_model = VoteOutcome
    update_interval = timedelta(minutes=2)

    async def start(self, ctx: Ctx, params: VoteParams) -> None:
        variables = {
            "title": params.title,
            "html": _body(params),
            "account": {"slug": ctx.config.collective_slug},
            "tags": [TAG],
        }
        data = await client_for(ctx).run(
            queries.CREATE_CONVERSATION, variables, "the vote's conversation"
        )
        created = data.get("createConversation") or {}
        view = conversation_view(ctx, created)
        ctx.process_state.set("conversation_id", view.id)
        ctx.url = view.url
        ctx.closing_at = params.closing_at
        ctx.set_outcome(VoteOutcome(votes=tally(created), url=view.url))

    async def update(self, ctx: Ctx, params: VoteParams) -> None:
        await _refresh(ctx)

    async def close(self, ctx: Ctx, params: VoteParams) -> None:
        conversation = await _refresh(ctx)
        if not conversation:
            return  # gone: _refresh failed the process
        oc = client_for(ctx)
        conversation_id = str(ctx.process_state.get("conversation_id"))
        title = str(conversation.get("title") or params.title)
        if not title.startswith(CLOSED):  # a close retried after a failure renames once
            await oc.run(
                queries.EDIT_CONVERSATION,
                {"id": conversation_id, "title": f"{CLOSED}{title}"[:255]},
                "renaming the vote's conversation",
            )
        votes = tally(conversation)
        comment = (
            f"<p>Voting is closed. Final count: {votes.yes} for ({YES}), "
            f"{votes.no} against ({NO}).</p>"
        )
        await oc.run(
            queries.CREATE_COMMENT,
            {"comment": {"html": comment, "conversation": {"id": conversation_id}}},
            "the vote's tally",
        )
        ctx.complete(VoteOutcome(votes=votes, url=ctx.url or ""))


async def _refresh(ctx: Ctx) -> dict[str, Any]:
    """Read the conversation again and record the count; returns the conversation."""
    conversation_id = str(ctx.process_state.get("conversation_id"))
    data = await client_for(ctx).run(
        queries.CONVERSATION, {"id": conversation_id}, "the vote's conversation"
    )
    conversation = data.get("conversation")
    if not isinstance(conversation, dict):
        ctx.fail("the vote's conversation no longer exists on Open Collective")
        return {}
    url = ctx.url or conversation_view(ctx, conversation).url
    ctx.set_outcome(VoteOutcome(votes=tally(conversation), url=url))
    return conversation
