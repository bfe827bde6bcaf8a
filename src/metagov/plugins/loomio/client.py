"""Loomio's group API (``/api/b1``) over the gateway's shared httpx client, and readers of its
answers.

Each API key belongs to one group (Loomio: group settings → API keys), so the key chooses the
group: the main group's ``api_key``, or one of ``subgroup_api_keys``. Loomio takes the key as the
``api_key`` parameter (in the query of a GET, in the JSON body of a POST) and answers in its
"records" shape: one list per kind of record (``polls``, ``poll_options``, ``users``, ``groups``…),
the requested record first.

Loomio's refusals become errors a Driver can act on: 401/403/422 are a 400 naming Loomio's own
message, 404 a 404, 429 a 429 with its ``Retry-After``, and a failing or unreachable Loomio a 502.
"""

from __future__ import annotations

from typing import Any

import httpx

from metagov.plugins.loomio.schemas import (
    DiscussionView,
    GroupView,
    LoomioConfig,
    Member,
    OptionVotes,
    PollView,
)
from metagov.plugins.sdk import PluginContext, PluginError, RateLimited, UpstreamError

API = "/api/b1"
Records = dict[str, Any]


class LoomioApiError(PluginError):
    """Loomio refused a request; the message names what Loomio said."""

    code = "loomio_error"

    def __init__(self, detail: str, *, status_code: int = 400) -> None:
        super().__init__(detail)
        self.status_code = status_code


def _loomio_message(response: httpx.Response) -> str:
    """What Loomio said in an error answer, in a few words (never the request, which holds
    the key)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, dict):
            parts = [
                f"{field} {'; '.join(str(m) for m in msgs) if isinstance(msgs, list) else msgs}"
                for field, msgs in errors.items()
            ]
            return ", ".join(parts)[:500] or f"HTTP {response.status_code}"
        for key in ("error", "exception", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:500]
    return f"HTTP {response.status_code}"


class LoomioClient:
    """One API key's view of Loomio."""

    def __init__(self, http: httpx.AsyncClient, server_url: str, api_key: str) -> None:
        self._http = http
        self._base = server_url.rstrip("/") + API
        self._key = api_key

    async def _send(
        self, method: str, path: str, what: str, *, query: dict[str, Any], json: Any = None
    ) -> Records:
        try:
            response = await self._http.request(
                method, f"{self._base}{path}", params=query, json=json
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Loomio could not be reached: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429:
            try:
                wait = float(response.headers.get("retry-after", "60"))
            except ValueError:
                wait = 60.0
            raise RateLimited(f"Loomio is rate limiting {what}", retry_after=wait)
        if status >= 500:
            raise UpstreamError(f"Loomio answered {status} to {what}")
        if status == 404:
            raise LoomioApiError(f"Loomio found no {what}", status_code=404)
        if status in (401, 403):
            raise LoomioApiError(
                f"Loomio refused the API key for {what} ({_loomio_message(response)}); check "
                "that the key exists and has the permission"
            )
        if status >= 400:
            raise LoomioApiError(f"Loomio refused {what}: {_loomio_message(response)}")
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError(f"Loomio sent an unreadable answer to {what}") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"Loomio sent an unexpected answer to {what}")
        return data

    async def get(self, path: str, what: str, **query: Any) -> Records:
        return await self._send("GET", path, what, query={**query, "api_key": self._key})

    async def post(self, path: str, what: str, body: dict[str, Any]) -> Records:
        return await self._send("POST", path, what, query={}, json={**body, "api_key": self._key})

    async def memberships(self, *, offset: int = 0, per: int = 100) -> Records:
        return await self.get("/memberships", "memberships", **{"from": offset, "per": per})

    async def poll(self, ref: str) -> Records:
        return await self.get(f"/polls/{ref}", f"poll {ref}")

    async def create_poll(self, body: dict[str, Any]) -> Records:
        return await self.post("/polls", "the poll", body)

    async def discussion(self, ref: str) -> Records:
        return await self.get(f"/discussions/{ref}", f"discussion {ref}")

    async def create_discussion(self, body: dict[str, Any]) -> Records:
        return await self.post("/discussions", "the discussion", body)


# --- the instance's keys ---------------------------------------------------------------------


def client(ctx: PluginContext[LoomioConfig], api_key: str | None = None) -> LoomioClient:
    key = api_key if api_key is not None else ctx.config.api_key.get_secret_value()
    return LoomioClient(ctx.http, ctx.config.server_url, key)


def subgroup_key(ctx: PluginContext[LoomioConfig], ref: str | None) -> tuple[str, str | None]:
    """The API key for ``ref`` (a subgroup's handle, key or id, as ``initialize`` recorded
    them), and that subgroup's Loomio key; the main group's key for None."""
    if ref is None:
        return ctx.config.api_key.get_secret_value(), None
    keys = ctx.config.subgroup_keys()
    known: list[dict[str, Any]] = ctx.state.get("subgroups", [])
    wanted = ref.lower()
    for group in known:
        names = {str(group.get("id")), str(group.get("key") or "").lower()}
        names.add(str(group.get("handle") or "").lower())
        if wanted in names and group.get("index", -1) < len(keys):
            return keys[group["index"]], group.get("key")
    choices = ", ".join(str(g.get("handle") or g.get("key")) for g in known) or "none configured"
    raise PluginError(
        f"subgroup {ref!r} is not one of this instance's subgroups ({choices}); add its API key "
        "to subgroup_api_keys",
        code="unknown_subgroup",
    )


def key_for_group(ctx: PluginContext[LoomioConfig], group_key: str | None) -> str | None:
    """The API key of the subgroup whose Loomio key is ``group_key`` (the main key for None);
    None if that subgroup is no longer configured."""
    if group_key is None:
        return ctx.config.api_key.get_secret_value()
    keys = ctx.config.subgroup_keys()
    for group in ctx.state.get("subgroups", []):
        if group.get("key") == group_key and group.get("index", -1) < len(keys):
            return str(keys[group["index"]])
    return None


def all_keys(ctx: PluginContext[LoomioConfig]) -> list[tuple[str, str | None]]:
    """Every key of the instance with its subgroup's Loomio key (None for the main group)."""
    keys: list[tuple[str, str | None]] = [(ctx.config.api_key.get_secret_value(), None)]
    subgroup_keys = ctx.config.subgroup_keys()
    for group in ctx.state.get("subgroups", []):
        index = group.get("index", -1)
        if 0 <= index < len(subgroup_keys):
            keys.append((subgroup_keys[index], group.get("key")))
    return keys


# --- reading Loomio's records ----------------------------------------------------------------


def _first(records: Records, kind: str, what: str) -> dict[str, Any]:
    """The record an answer is about (the first of its kind), with an integer id."""
    found = records.get(kind)
    if not isinstance(found, list) or not found or not isinstance(found[0], dict):
        raise UpstreamError(f"Loomio's answer holds no {what}")
    first: dict[str, Any] = found[0]
    if not isinstance(first.get("id"), int) or not first.get("key"):
        raise UpstreamError(f"Loomio's answer holds a {what} without id or key")
    return first


def group_of(records: Records) -> dict[str, Any]:
    """The group a memberships answer is about: the one its memberships point at."""
    groups = [g for g in records.get("groups") or [] if isinstance(g, dict)]
    memberships = [m for m in records.get("memberships") or [] if isinstance(m, dict)]
    ids = {m.get("group_id") for m in memberships}
    for group in groups:
        if group.get("id") in ids and isinstance(group.get("id"), int):
            return group
    if groups and isinstance(groups[0].get("id"), int):
        return groups[0]
    raise UpstreamError("Loomio did not say which group the API key belongs to")


def group_view(group: dict[str, Any]) -> GroupView:
    return GroupView(
        id=int(group["id"]),
        key=group.get("key"),
        handle=group.get("handle"),
        name=group.get("name"),
    )


def members(records: Records) -> list[Member]:
    users = {u.get("id"): u for u in records.get("users") or [] if isinstance(u, dict)}
    out = []
    for membership in records.get("memberships") or []:
        if not isinstance(membership, dict) or membership.get("user_id") is None:
            continue
        user = users.get(membership["user_id"], {})
        out.append(
            Member(
                user_id=int(membership["user_id"]),
                name=user.get("name"),
                username=user.get("username"),
                email=user.get("email"),
                admin=bool(membership.get("admin")),
            )
        )
    return out


def _option_name(name: str, name_format: str | None) -> str:
    """Loomio names proposal options by translation key (``poll_proposal_options.agree``)."""
    if name_format == "i18n" and "." in name:
        return name.rsplit(".", 1)[1]
    return name


def tally(records: Records) -> dict[str, OptionVotes]:
    """Votes per option: from the poll's ``results`` (current Loomio), or from the sideloaded
    ``poll_options`` with their ``voter_scores`` (older Loomio)."""
    poll = _first(records, "polls", "poll")
    votes: dict[str, OptionVotes] = {}
    results = poll.get("results")
    if isinstance(results, list):
        for row in results:
            if not isinstance(row, dict) or not isinstance(row.get("id"), int) or row["id"] <= 0:
                continue  # "none of the above" and "undecided" rows are not options
            users = [str(u) for u in row.get("voter_ids") or []]
            votes[_option_name(str(row.get("name")), row.get("name_format"))] = OptionVotes(
                count=int(row.get("voter_count", len(users)) or 0),
                users=users,
                score=row.get("score"),
            )
        return votes
    options = [
        o
        for o in records.get("poll_options") or []
        if isinstance(o, dict) and o.get("poll_id") in (None, poll.get("id"))
    ]
    for option in sorted(options, key=lambda o: o.get("priority") or 0):
        scores = option.get("voter_scores") or {}
        users = sorted((str(u) for u in scores), key=lambda u: (len(u), u))
        votes[str(option.get("name"))] = OptionVotes(
            count=len(users), users=users, score=option.get("total_score")
        )
    return votes


def poll_url(server_url: str, key: str) -> str:
    return f"{server_url.rstrip('/')}/p/{key}"


def poll_view(server_url: str, records: Records) -> PollView:
    poll = _first(records, "polls", "poll")
    key = str(poll.get("key"))
    return PollView(
        id=int(poll["id"]),
        key=key,
        title=poll.get("title"),
        poll_type=poll.get("poll_type"),
        closing_at=poll.get("closing_at"),
        closed_at=poll.get("closed_at"),
        group_id=poll.get("group_id"),
        author_id=poll.get("author_id"),
        votes=tally(records),
        voters_count=poll.get("voters_count"),
        undecided_voters_count=poll.get("undecided_voters_count"),
        cast_stances_pct=poll.get("cast_stances_pct"),
        url=poll_url(server_url, key),
    )


def discussion_view(server_url: str, records: Records) -> DiscussionView:
    discussion = _first(records, "discussions", "discussion")
    key = str(discussion.get("key"))
    return DiscussionView(
        id=int(discussion["id"]),
        key=key,
        title=discussion.get("title"),
        url=f"{server_url.rstrip('/')}/d/{key}",
        group_id=discussion.get("group_id"),
        author_id=discussion.get("author_id"),
        created_at=discussion.get("created_at"),
    )
