"""GitHub votes, each held in an issue the plugin opens.

``issue-react-vote``: 👍 and 👎 reactions on the issue. GitHub sends no webhook for reactions, so
the vote polls them every ``update_interval``. ``issue-comment-vote``: comments such as
``/vote Option``; comment webhooks reach only the vote whose issue they are on (the listen key
``{repo}#{number}``), and the comments are read once more when the vote closes, so that a webhook
GitHub never delivered does not lose a vote.

Both close at ``max_votes``, at ``closing_at``, when the Driver closes them, or when someone
closes their issue on GitHub: the tally is commented on the issue and the issue is closed.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from metagov.plugins.github.client import GitHubClient, GitHubError, installation_client
from metagov.plugins.github.schemas import (
    CommentVoteOutcome,
    CommentVoteParams,
    GitHubConfig,
    GitHubSettings,
    OptionVotes,
    ReactVoteOutcome,
    ReactVoteParams,
    VoteParams,
)
from metagov.plugins.sdk import (
    CredentialsRejected,
    GovernanceProcess,
    PluginError,
    ProcessContext,
    WebhookRequest,
)

ReactCtx = ProcessContext[GitHubConfig, ReactVoteOutcome]
CommentCtx = ProcessContext[GitHubConfig, CommentVoteOutcome]
AnyCtx = ProcessContext[GitHubConfig, Any]

POLL_INTERVAL = timedelta(minutes=1)
GONE = (404, 410)  # the issue, or the repository's issues, no longer exist
VOTE_LINE = re.compile(r"^/vote\s+(.+?)\s*$", re.IGNORECASE)


def listen_key(repo: str, number: int) -> str:
    """What correlates a webhook with a vote: the repository (any case) and the issue number."""
    return f"{repo.casefold()}#{number}"


def issue_key(body: Any) -> str | None:
    """The listen key of the issue a webhook is about, if it is about one."""
    if not isinstance(body, dict):
        return None
    issue, repository = body.get("issue"), body.get("repository")
    if not isinstance(issue, dict) or not isinstance(repository, dict):
        return None
    number, name = issue.get("number"), repository.get("name")
    if not isinstance(number, int) or not isinstance(name, str):
        return None
    return listen_key(name, number)


def is_bot(user: Any, settings: GitHubSettings) -> bool:
    """Bots (the App itself included) do not vote."""
    if not isinstance(user, dict):
        return True
    return user.get("type") == "Bot" or (
        settings.bot_login is not None and user.get("login") == settings.bot_login
    )


def human(user: Any, settings: GitHubSettings) -> str | None:
    """The login of a person (a vote counts), or None for a bot or no user at all."""
    if is_bot(user, settings) or not user.get("login"):
        return None
    return str(user["login"])


def _issue_path(ctx: AnyCtx, params: VoteParams) -> str:
    return f"/repos/{ctx.config.owner}/{params.repo}/issues/{ctx.process_state.get('number')}"


def _deadline(params: VoteParams) -> str:
    ends = []
    if params.max_votes is not None:
        ends.append(f"after {params.max_votes} vote{'s' if params.max_votes != 1 else ''}")
    if params.closing_at is not None:
        ends.append(f"at {params.closing_at.isoformat(timespec='minutes')}")
    return f"Voting closes {' or '.join(ends)}, or when this issue is closed." if ends else ""


def _issue_body(params: VoteParams, how: str) -> str:
    parts = [params.help_text.strip()] if params.help_text else []
    parts.append(how)
    deadline = _deadline(params)
    if deadline:
        parts.append(deadline)
    return "\n\n".join(parts)


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def _voters(users: list[str]) -> str:
    return ", ".join(users) if users else "—"


async def _open_issue(ctx: AnyCtx, params: VoteParams, body: str) -> tuple[int, str]:
    """Open the vote's issue; the process listens to webhooks about it from now on."""
    github = await installation_client(ctx)
    issue = await github.call(
        "POST",
        f"/repos/{ctx.config.owner}/{params.repo}/issues",
        json={"title": params.question, "body": body},
    )
    number, url = int(issue["number"]), str(issue["html_url"])
    ctx.url = url
    ctx.closing_at = params.closing_at
    ctx.process_state.set("number", number)
    ctx.listen(listen_key(params.repo, number))
    return number, url


async def _announce_and_close(
    ctx: AnyCtx, github: GitHubClient, params: VoteParams, tally: str, *, close_issue: bool
) -> None:
    """Comment the tally on the issue and close it (unless someone already did)."""
    path = _issue_path(ctx, params)
    await github.call("POST", f"{path}/comments", json={"body": tally})
    if close_issue:
        await github.call("PATCH", path, json={"state": "closed", "state_reason": "completed"})


def _closed_elsewhere(ctx: AnyCtx, params: VoteParams, webhook: WebhookRequest) -> str | None:
    """``closed`` or ``deleted`` when someone other than the App did that to the vote's issue."""
    if webhook.headers.get("x-github-event") != "issues":
        return None
    try:
        body = webhook.json()
    except (ValueError, UnicodeDecodeError):
        return None
    if issue_key(body) != listen_key(params.repo, ctx.process_state.get("number")):
        return None
    if is_bot(body.get("sender"), ctx.settings) and body.get("action") == "closed":
        return None  # our own close, or a bot's: the vote decides when it ends
    action = body.get("action")
    return action if action in ("closed", "deleted") else None


def _fail_gone(ctx: AnyCtx, exc: GitHubError) -> None:
    ctx.fail("the vote's issue is gone from GitHub", github_status=exc.status)


# --- reaction vote ---------------------------------------------------------------------------

REACT_HOW = (
    "**How to vote:** react to this issue with 👍 for **yes** or 👎 for **no**. One vote per "
    "person: if you react with both, the latest counts. Reactions by bots are not counted."
)


def tally_reactions(
    reactions: list[Any], settings: GitHubSettings
) -> tuple[dict[str, OptionVotes], str]:
    """Count 👍/👎 by people: each person's latest of the two counts. Returns the votes (voters
    in the order they voted) and ``pass``, ``fail`` or ``tie``."""
    latest: dict[str, tuple[tuple[str, int], str]] = {}
    for reaction in reactions:
        if not isinstance(reaction, dict) or reaction.get("content") not in ("+1", "-1"):
            continue
        login = human(reaction.get("user"), settings)
        if login is None:
            continue
        stamp = (str(reaction.get("created_at") or ""), int(reaction.get("id") or 0))
        choice = "yes" if reaction["content"] == "+1" else "no"
        if login not in latest or stamp > latest[login][0]:
            latest[login] = (stamp, choice)
    ordered = sorted(latest.items(), key=lambda item: item[1][0])
    votes = {
        choice: OptionVotes(
            count=sum(1 for _, (_, c) in ordered if c == choice),
            users=[login for login, (_, c) in ordered if c == choice],
        )
        for choice in ("yes", "no")
    }
    yes, no = votes["yes"].count, votes["no"].count
    return votes, "pass" if yes > no else "fail" if no > yes else "tie"


def _react_tally(outcome: ReactVoteOutcome) -> str:
    yes, no = outcome.votes["yes"], outcome.votes["no"]
    return "\n".join(
        [
            "**Voting is closed.**",
            "",
            "| | Votes | Voters |",
            "|---|---|---|",
            f"| 👍 yes | {yes.count} | {_voters(yes.users)} |",
            f"| 👎 no | {no.count} | {_voters(no.users)} |",
            "",
            f"**Result: {outcome.result}**",
        ]
    )


class IssueReactVote(GovernanceProcess[GitHubConfig, ReactVoteParams, ReactVoteOutcome]):
    """A yes/no vote by 👍/👎 reactions on an issue the plugin opens."""

    slug = "issue-react-vote"
    params_model = ReactVoteParams
    outcome_model = ReactVoteOutcome
    update_interval = POLL_INTERVAL

    async def start(self, ctx: ReactCtx, params: ReactVoteParams) -> None:
        number, url = await _open_issue(ctx, params, _issue_body(params, REACT_HOW))
        votes, result = tally_reactions([], ctx.settings)
        ctx.set_outcome(ReactVoteOutcome(issue_number=number, url=url, votes=votes, result=result))

    async def _count(self, ctx: ReactCtx, github: GitHubClient, params: ReactVoteParams) -> bool:
        """Poll the reactions into the outcome; False (and the process failed) if the issue is
        gone."""
        try:
            reactions = await github.paginate(f"{_issue_path(ctx, params)}/reactions")
        except GitHubError as exc:
            if exc.status not in GONE:
                raise
            _fail_gone(ctx, exc)
            return False
        votes, result = tally_reactions(reactions, ctx.settings)
        assert ctx.outcome is not None  # set by start
        ctx.set_outcome(ctx.outcome.model_copy(update={"votes": votes, "result": result}))
        return True

    async def _finish(
        self,
        ctx: ReactCtx,
        params: ReactVoteParams,
        *,
        close_issue: bool,
        counted_with: GitHubClient | None = None,
    ) -> None:
        """Count the votes (unless ``counted_with`` just did), announce them, close the issue
        and complete."""
        github = counted_with
        if github is None:
            github = await installation_client(ctx)
            if not await self._count(ctx, github, params):
                return
        assert ctx.outcome is not None
        try:
            await _announce_and_close(
                ctx, github, params, _react_tally(ctx.outcome), close_issue=close_issue
            )
        except GitHubError as exc:
            if exc.status not in GONE:
                raise
            _fail_gone(ctx, exc)
            return
        ctx.complete()

    async def update(self, ctx: ReactCtx, params: ReactVoteParams) -> None:
        try:
            github = await installation_client(ctx)
            counted = await self._count(ctx, github, params)
        except CredentialsRejected:
            raise  # the core renews the token and polls again at once
        except PluginError as exc:
            # A poll that fails (GitHub down, rate limited, the installation suspended) is
            # simply tried again at the next one; failing the hook would add an error to the
            # process at every interval.
            ctx.log.warning("polling the vote's reactions failed (%s); next poll soon", exc.code)
            return
        if not counted:
            return
        assert ctx.outcome is not None
        voters = sum(option.count for option in ctx.outcome.votes.values())
        if params.max_votes is not None and voters >= params.max_votes:
            await self._finish(ctx, params, close_issue=True, counted_with=github)

    async def close(self, ctx: ReactCtx, params: ReactVoteParams) -> None:
        await self._finish(ctx, params, close_issue=True)

    async def receive_webhook(
        self, ctx: ReactCtx, params: ReactVoteParams, webhook: WebhookRequest
    ) -> None:
        happened = _closed_elsewhere(ctx, params, webhook)
        if happened == "closed":
            await self._finish(ctx, params, close_issue=False)
        elif happened == "deleted":
            ctx.fail("the vote's issue was deleted on GitHub")


# --- comment vote ----------------------------------------------------------------------------


def parse_vote(text: Any, options: list[str]) -> str | None:
    """The option a comment votes for: its first non-empty line is ``/vote <option>`` (any
    case, any spacing); None if it is not a vote or names no option."""
    if not isinstance(text, str):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    matched = VOTE_LINE.match(first)
    if matched is None:
        return None
    wanted = " ".join(matched.group(1).strip("`*_ ").split()).casefold()
    return next((option for option in options if option.casefold() == wanted), None)


def _comment_how(options: list[str]) -> str:
    listed = "\n".join(f"- `/vote {option}`" for option in options)
    return (
        "**How to vote:** comment on this issue with one of these lines:\n\n"
        f"{listed}\n\n"
        "Only your first vote comment counts; editing it changes your vote, deleting it "
        "withdraws it. Comments by bots are not counted."
    )


def ballots_from_comments(
    comments: list[Any], options: list[str], settings: GitHubSettings
) -> dict[str, dict[str, Any]]:
    """The valid vote comments among ``comments``, by comment id."""
    ballots: dict[str, dict[str, Any]] = {}
    for comment in comments:
        if not isinstance(comment, dict):
            continue
        login = human(comment.get("user"), settings)
        option = parse_vote(comment.get("body"), options)
        if option is not None and login is not None and isinstance(comment.get("id"), int):
            ballots[str(comment["id"])] = {"user": login, "option": option}
    return ballots


def tally_comments(
    ballots: dict[str, dict[str, Any]], options: list[str]
) -> tuple[dict[str, OptionVotes], str | None]:
    """Each person's first vote comment counts (the lowest comment id: GitHub numbers comments
    in the order they were made, whatever order their webhooks arrive in)."""
    first: dict[str, tuple[int, str]] = {}
    for comment_id, ballot in ballots.items():
        cid, user = int(comment_id), str(ballot["user"])
        if user not in first or cid < first[user][0]:
            first[user] = (cid, str(ballot["option"]))
    ordered = sorted(first.items(), key=lambda item: item[1][0])
    votes = {
        option: OptionVotes(
            count=sum(1 for _, (_, o) in ordered if o == option),
            users=[user for user, (_, o) in ordered if o == option],
        )
        for option in options
    }
    top = max((v.count for v in votes.values()), default=0)
    leaders = [option for option, v in votes.items() if v.count == top]
    return votes, leaders[0] if top > 0 and len(leaders) == 1 else None


def _comment_tally(outcome: CommentVoteOutcome) -> str:
    rows = [
        f"| {_cell(option)} | {v.count} | {_voters(v.users)} |"
        for option, v in outcome.votes.items()
    ]
    result = _cell(outcome.result) if outcome.result is not None else "no option leads"
    return "\n".join(
        [
            "**Voting is closed.**",
            "",
            "| Option | Votes | Voters |",
            "|---|---|---|",
            *rows,
            "",
            f"**Result: {result}**",
        ]
    )


class IssueCommentVote(GovernanceProcess[GitHubConfig, CommentVoteParams, CommentVoteOutcome]):
    """A vote among options by `/vote <option>` comments on an issue the plugin opens."""

    slug = "issue-comment-vote"
    params_model = CommentVoteParams
    outcome_model = CommentVoteOutcome

    async def start(self, ctx: CommentCtx, params: CommentVoteParams) -> None:
        body = _issue_body(params, _comment_how(params.options))
        number, url = await _open_issue(ctx, params, body)
        votes, result = tally_comments({}, params.options)
        ctx.set_outcome(
            CommentVoteOutcome(issue_number=number, url=url, votes=votes, result=result)
        )

    def _record(self, ctx: CommentCtx, params: CommentVoteParams, ballots: dict[str, Any]) -> int:
        """Keep ``ballots`` and write the outcome; returns how many people have voted."""
        ctx.process_state.set("ballots", ballots)
        votes, result = tally_comments(ballots, params.options)
        assert ctx.outcome is not None  # set by start
        ctx.set_outcome(ctx.outcome.model_copy(update={"votes": votes, "result": result}))
        return sum(v.count for v in votes.values())

    async def receive_webhook(
        self, ctx: CommentCtx, params: CommentVoteParams, webhook: WebhookRequest
    ) -> None:
        happened = _closed_elsewhere(ctx, params, webhook)
        if happened == "closed":
            await self._finish(ctx, params, close_issue=False)
            return
        if happened == "deleted":
            ctx.fail("the vote's issue was deleted on GitHub")
            return
        if webhook.headers.get("x-github-event") != "issue_comment":
            return
        try:
            body = webhook.json()
        except (ValueError, UnicodeDecodeError):
            return
        if issue_key(body) != listen_key(params.repo, ctx.process_state.get("number")):
            return  # about another issue (the core already filters; this stays true without it)
        comment = body.get("comment")
        if not isinstance(comment, dict) or not isinstance(comment.get("id"), int):
            return
        ballots = dict(ctx.process_state.get("ballots") or {})
        comment_id = str(comment["id"])
        if body.get("action") == "deleted":
            if ballots.pop(comment_id, None) is None:
                return
        elif body.get("action") in ("created", "edited"):
            counted = ballots_from_comments([comment], params.options, ctx.settings)
            if counted == {} and comment_id not in ballots:
                return  # not a vote, and it was not one before
            ballots.pop(comment_id, None)
            ballots.update(counted)
        else:
            return
        voters = self._record(ctx, params, ballots)
        if params.max_votes is not None and voters >= params.max_votes:
            await self._finish(ctx, params, close_issue=True)

    async def close(self, ctx: CommentCtx, params: CommentVoteParams) -> None:
        await self._finish(ctx, params, close_issue=True)

    async def _finish(
        self, ctx: CommentCtx, params: CommentVoteParams, *, close_issue: bool
    ) -> None:
        """Read every comment once more (GitHub does not redeliver a webhook we missed), then
        announce the result and close the issue."""
        github = await installation_client(ctx)
        path = _issue_path(ctx, params)
        try:
            comments = await github.paginate(f"{path}/comments")
            self._record(ctx, params, ballots_from_comments(comments, params.options, ctx.settings))
            assert ctx.outcome is not None
            await _announce_and_close(
                ctx, github, params, _comment_tally(ctx.outcome), close_issue=close_issue
            )
        except GitHubError as exc:
            if exc.status not in GONE:
                raise
            _fail_gone(ctx, exc)
            return
        ctx.complete()
