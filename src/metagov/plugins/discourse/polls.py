"""The ``poll`` process: a native Discourse poll, written in Discourse's poll BBCode.

Discourse counts the votes; the process follows them by reading the post every
``update_interval`` and whenever a webhook says the post changed (it listens to the post's id),
notices a poll that someone closed by hand on the forum, and closes the poll through
``PUT /polls/toggle_status`` when the Driver closes the process or ``closing_at`` passes.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from metagov.plugins.discourse.client import DiscourseApiError, DiscourseClient, client_for
from metagov.plugins.discourse.schemas import DiscourseConfig, PollOutcome, PollParams
from metagov.plugins.discourse.webhooks import payload_of
from metagov.plugins.sdk import GovernanceProcess, PluginError, ProcessContext, WebhookRequest

POLL_NAME = "poll"  # Discourse's name for a post's unnamed poll
PollCtx = ProcessContext[DiscourseConfig, PollOutcome]
_TAG = re.compile(r"<[^>]+>")


def poll_markup(params: PollParams) -> str:
    """The post's raw text: the details, then the poll BBCode with its title and options."""
    attributes = [f"type={params.poll_type}"]
    if params.results is not None:
        attributes.append(f"results={params.results}")
    if params.public is not None:
        attributes.append(f"public={'true' if params.public else 'false'}")
    for name in ("min", "max", "step"):
        value = getattr(params, name)
        if value is not None:
            attributes.append(f"{name}={value}")
    if params.chart_type is not None:
        attributes.append(f"chartType={params.chart_type}")
    if params.groups:
        attributes.append(f"groups={','.join(params.groups)}")
    if params.closing_at is not None:
        close = params.closing_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        attributes.append(f"close={close}")
    lines = [f"[poll {' '.join(attributes)}]", f"# {params.title.strip()}"]
    lines += [f"* {option.strip()}" for option in params.options or []]
    lines.append("[/poll]")
    poll = "\n".join(lines)
    return f"{params.details.strip()}\n\n{poll}" if params.details else poll


def find_poll(polls: Any) -> dict[str, Any] | None:
    if not isinstance(polls, list):
        return None
    for poll in polls:
        if isinstance(poll, dict) and poll.get("name", POLL_NAME) == POLL_NAME:
            return poll
    return None


def _label(option: dict[str, Any]) -> str:
    return html.unescape(_TAG.sub("", str(option.get("html", "")))).strip()


def outcome_of(
    poll: dict[str, Any], params: PollParams, url: str | None, previous: PollOutcome | None
) -> PollOutcome:
    """The outcome Discourse shows now. Options are named as the Driver gave them (Discourse
    keeps their order); votes it hides (``results`` other than ``always``) keep their last
    known counts."""
    options = [o for o in poll.get("options") or [] if isinstance(o, dict)]
    given = params.options or []
    named = params.poll_type != "number" and len(given) == len(options)
    votes = previous.votes if previous is not None else {}
    if options and all(isinstance(o.get("votes"), int) for o in options):
        votes = {}
        for index, option in enumerate(options):
            label = given[index] if named else _label(option) or str(option.get("id"))
            if label in votes:
                label = f"{label} ({option.get('id')})"
            votes[label] = int(option["votes"])
    voters = poll.get("voters")
    count = voters if isinstance(voters, int) else (previous.voters if previous else 0)
    return PollOutcome(votes=votes, voters=count, url=url)


def _initial(params: PollParams, url: str) -> PollOutcome:
    return PollOutcome(votes={option: 0 for option in params.options or []}, voters=0, url=url)


class DiscoursePoll(GovernanceProcess[DiscourseConfig, PollParams, PollOutcome]):
    """A native Discourse poll in a new topic or a reply; Discourse counts the votes."""

    slug = "poll"
    params_model = PollParams
    outcome_model = PollOutcome
    update_interval = timedelta(minutes=1)

    async def start(self, ctx: PollCtx, params: PollParams) -> None:
        if params.closing_at is not None and params.closing_at <= datetime.now(UTC):
            raise PluginError("closing_at must be in the future")
        forum = client_for(ctx)
        payload: dict[str, Any] = {"raw": poll_markup(params)}
        if params.topic_id is not None:
            payload["topic_id"] = params.topic_id
        else:
            payload["title"] = params.title
            if params.category is not None:
                payload["category"] = params.category
        post = await forum.post("/posts.json", json=payload)
        if not isinstance(post, dict) or not isinstance(post.get("id"), int):
            raise PluginError("Discourse did not say which post it created")
        post_id = post["id"]
        url = forum.post_url(post)
        ctx.url = url
        ctx.closing_at = params.closing_at
        ctx.process_state.set("post_id", post_id)
        ctx.process_state.set("topic_id", post.get("topic_id"))
        ctx.listen(str(post_id))
        poll = find_poll(post.get("polls"))
        ctx.set_outcome(outcome_of(poll, params, url, None) if poll else _initial(params, url))

    async def update(self, ctx: PollCtx, params: PollParams) -> None:
        await self._refresh(ctx, params, client_for(ctx))

    async def receive_webhook(
        self, ctx: PollCtx, params: PollParams, webhook: WebhookRequest
    ) -> None:
        """A change to the poll's post (an edit, a deletion) is read back from the forum rather
        than taken from the body; webhooks about other posts are not this poll's."""
        if webhook.headers.get("x-discourse-event-type") != "post":
            return
        post = (payload_of(webhook) or {}).get("post")
        if not isinstance(post, dict) or post.get("id") != ctx.process_state.get("post_id"):
            return
        event = webhook.headers.get("x-discourse-event", "")
        if event == "post_created":
            return  # the poll's own creation: nothing new
        if event == "post_destroyed":
            ctx.fail("the poll's post was deleted on Discourse")
            return
        await self._refresh(ctx, params, client_for(ctx))

    async def close(self, ctx: PollCtx, params: PollParams) -> None:
        forum = client_for(ctx)
        form = {
            "post_id": str(ctx.process_state.get("post_id")),
            "poll_name": POLL_NAME,
            "status": "closed",
        }
        try:
            answer = await forum.put("/polls/toggle_status", data=form)
        except DiscourseApiError:
            # Already closed on the forum (by hand, or by its own `close` time)? Then its
            # results stand; otherwise the Driver hears Discourse's refusal.
            if await self._refresh(ctx, params, forum):
                return
            raise
        poll = answer.get("poll") if isinstance(answer, dict) else None
        if not isinstance(poll, dict):
            raise PluginError("Discourse did not return the closed poll")
        ctx.complete(outcome_of(poll, params, ctx.url, ctx.outcome))

    async def _refresh(self, ctx: PollCtx, params: PollParams, forum: DiscourseClient) -> bool:
        """Read the post and record what its poll shows; True if the process ended."""
        post_id = ctx.process_state.get("post_id")
        try:
            post = await forum.get(f"/posts/{post_id}.json")
        except DiscourseApiError as exc:
            if exc.status == 404:
                ctx.fail("the poll's post is gone from Discourse", post_id=post_id)
                return True
            raise
        if not isinstance(post, dict):
            raise PluginError("Discourse sent no post")
        if post.get("deleted_at"):
            ctx.fail("the poll's post was deleted on Discourse", post_id=post_id)
            return True
        poll = find_poll(post.get("polls"))
        if poll is None:
            ctx.fail("the poll was removed from its post on Discourse", post_id=post_id)
            return True
        outcome = outcome_of(poll, params, ctx.url, ctx.outcome)
        if poll.get("status") == "closed":
            ctx.complete(outcome)
            return True
        ctx.set_outcome(outcome)
        return False
