"""The Loomio plugin: a community's Loomio group (and its subgroups) through Loomio's group API.

Each community enables it with the group's API key (``community_platform_id`` = the group's
handle, checked against Loomio when enabling). Loomio does not sign its webhooks, so the
instance's hook URL carries a secret token, compared in constant time before anything is stored;
and since a token holder could still send anything, a webhook is only a hint: the poll or thread
it names is read again through the API, and must belong to one of the instance's groups, before
the Driver hears of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from metagov.plugins.loomio.client import (
    LoomioApiError,
    LoomioClient,
    Records,
    all_keys,
    client,
    discussion_view,
    group_of,
    group_view,
    members,
    poll_view,
    subgroup_key,
)
from metagov.plugins.loomio.hooks import Hint, discussion_kind, poll_kind, read_hint
from metagov.plugins.loomio.polls import LoomioPoll, listen_key
from metagov.plugins.loomio.schemas import (
    CreateDiscussion,
    DiscussionView,
    GetPoll,
    LoomioConfig,
    LoomioSettings,
    Members,
    PollView,
    SubgroupParams,
)
from metagov.plugins.sdk import (
    AuthType,
    EventType,
    Initiator,
    Plugin,
    PluginContext,
    PluginError,
    WebhookAccepted,
    WebhookRequest,
    WebhookScope,
    action,
    check_url_token,
)

Ctx = PluginContext[LoomioConfig]
PAGE = 100
MAX_PAGES = 50


class LoomioPlugin(Plugin[LoomioConfig]):
    """Loomio groups: threads, members, and polls of every Loomio type."""

    name = "loomio"
    calls_configured_urls = True  # the community names its server
    auth_type = AuthType.API_KEY
    config_model = LoomioConfig
    community_platform_id_field = "group_handle"
    webhooks = WebhookScope.INSTANCE
    webhook_secret_params = frozenset({"token"})
    settings_model = LoomioSettings
    processes = (LoomioPoll,)
    event_types = (
        EventType("new_discussion", "A thread was started; data.discussion as Loomio reports it"),
        EventType("new_comment", "A comment was posted in a thread"),
        EventType("poll_created", "A poll was started; data.poll with its votes"),
        EventType("stance_created", "Someone voted; data.poll with the votes so far"),
        EventType("poll_closed_by_user", "Someone closed a poll before its closing time"),
        EventType("poll_expired", "A poll reached its closing time"),
        EventType("outcome_created", "An outcome was stated for a closed poll"),
    )

    # --- enabling ----------------------------------------------------------------------------

    async def initialize(self, ctx: Ctx) -> None:
        """Check every key against Loomio, remember which group each one opens, and give the
        Driver the hook URL when its token is new."""
        settings: LoomioSettings = self.settings
        _check_server_url(ctx.config.server_url, allow_private=settings.allow_private_hosts)
        main = await _group_of_key(ctx, ctx.config.api_key.get_secret_value(), "api_key")
        names = {str(main.get("handle") or "").lower(), str(main.get("key") or "").lower()}
        if ctx.config.group_handle.lower() not in names:
            raise PluginError(
                f"group_handle {ctx.config.group_handle!r} is not the group of api_key, which "
                f"is {main.get('handle') or main.get('key')!r}",
                code="group_mismatch",
            )
        subgroups: list[dict[str, Any]] = []
        for index, key in enumerate(ctx.config.subgroup_keys()):
            field = f"subgroup_api_keys[{index}]"
            group = await _group_of_key(ctx, key, field)
            # Loomio's groups carry parent_id; a record without it cannot be checked.
            parent = group.get("parent_id", main["id"])
            if group["id"] == main["id"] or parent != main["id"]:
                raise PluginError(
                    f"{field} opens the group {group.get('handle') or group.get('key')!r}, "
                    f"which is not a subgroup of {ctx.config.group_handle!r}",
                    code="not_a_subgroup",
                )
            subgroups.append({**group_view(group).model_dump(), "index": index})
        ctx.state.set("group", group_view(main).model_dump())
        ctx.state.set("subgroups", subgroups)
        _announce_hook_url(ctx)

    # --- actions -----------------------------------------------------------------------------

    @action("list-members", description="The members of the group, or of one of its subgroups")
    async def list_members(self, ctx: Ctx, params: SubgroupParams) -> Members:
        api_key, _ = subgroup_key(ctx, params.subgroup)
        loomio = client(ctx, api_key)
        group = None
        found = []
        for page in range(MAX_PAGES):
            records = await loomio.memberships(offset=page * PAGE, per=PAGE)
            group = group or group_view(group_of(records))
            batch = members(records)
            found.extend(batch)
            if len(records.get("memberships") or []) < PAGE:
                break
        assert group is not None  # the loop ran at least once
        return Members(group=group, members=found)

    @action("create-discussion", description="Start a thread in the group or a subgroup")
    async def create_discussion(self, ctx: Ctx, params: CreateDiscussion) -> DiscussionView:
        api_key, _ = subgroup_key(ctx, params.subgroup)
        body = params.model_dump(mode="json", exclude_none=True, exclude={"subgroup"})
        records = await client(ctx, api_key).create_discussion(body)
        return discussion_view(ctx.config.server_url, records)

    @action("get-poll", description="A poll of the group or a subgroup, with its votes")
    async def get_poll(self, ctx: Ctx, params: GetPoll) -> PollView:
        api_key, _ = subgroup_key(ctx, params.subgroup)
        records = await client(ctx, api_key).poll(params.poll)
        view = poll_view(ctx.config.server_url, records)
        if not _ours(ctx, view.group_id):
            raise LoomioApiError(f"poll {params.poll} is not a poll of this group", status_code=404)
        return view

    # --- webhooks ----------------------------------------------------------------------------

    async def verify_webhook(
        self, request: WebhookRequest, config: LoomioConfig | None
    ) -> WebhookAccepted:
        assert config is not None  # instance webhooks always come with their config
        check_url_token(request, config.webhook_token)
        # Loomio gives no delivery id: an identical body (a redelivery) is stored once.
        return WebhookAccepted()

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str] | None:
        hint = read_hint(webhook)
        return [listen_key(key) for key in hint.poll_keys] if hint else []

    async def receive_webhook(self, ctx: Ctx, webhook: WebhookRequest) -> None:
        hint = read_hint(webhook)
        if hint is None:
            ctx.log.info("loomio webhook names no poll or thread; ignored")
            return
        if hint.poll_keys:
            await _poll_event(ctx, hint, hint.poll_keys[0])
        else:
            await _discussion_event(ctx, hint, hint.discussion_keys[0])


def _check_server_url(server_url: str, *, allow_private: bool) -> None:
    """Keep the gateway from calling its own network: no ``localhost`` and no literal private,
    loopback, link-local or reserved address, unless the settings allow it. (A name is resolved
    by the HTTP client; the config already requires https.)"""
    if allow_private:
        return
    host = (urlsplit(server_url).hostname or "").lower()
    refused = host == "localhost" or host.endswith(".localhost")
    with contextlib.suppress(ValueError):  # a name is not an address
        refused = refused or not ipaddress.ip_address(host).is_global
    if refused:
        raise PluginError(
            "server_url must not point at the gateway's own network "
            "(METAGOV_LOOMIO__ALLOW_PRIVATE_HOSTS allows it)",
            code="server_url_not_allowed",
        )


async def _group_of_key(ctx: Ctx, api_key: str, field: str) -> dict[str, Any]:
    try:
        records = await LoomioClient(ctx.http, ctx.config.server_url, api_key).memberships(per=1)
    except LoomioApiError as exc:
        raise PluginError(f"{field}: {exc.detail}", code="loomio_error") from None
    return group_of(records)


def _announce_hook_url(ctx: Ctx) -> None:
    """Show the hook URL once per token: when enabled, and again only if the token changed."""
    token = ctx.config.webhook_token.get_secret_value()
    digest = hashlib.sha256(token.encode()).hexdigest()
    if ctx.state.get("hook_token_sha256") != digest:
        ctx.tell_driver(hook_url=ctx.hook_url(token=token))
        ctx.state.set("hook_token_sha256", digest)


def _ours(ctx: Ctx, group_id: int | None) -> bool:
    """Whether ``group_id`` is the instance's group or one of its configured subgroups (Loomio
    shows a key more than its own group: public threads and polls of other groups)."""
    if group_id is None:
        return True  # older Loomio leaves it out; the key chose the group
    groups = [ctx.state.get("group") or {}, *ctx.state.get("subgroups", [])]
    return any(g.get("id") == group_id for g in groups)


async def _read(ctx: Ctx, what: str, ref: str) -> Records | None:
    """``ref`` read with the first of the instance's keys that can see it (None if none can)."""
    for api_key, _ in all_keys(ctx):
        loomio = client(ctx, api_key)
        try:
            return await (loomio.poll(ref) if what == "poll" else loomio.discussion(ref))
        except LoomioApiError:
            continue  # another group's key, or gone
    return None


async def _poll_event(ctx: Ctx, hint: Hint, key: str) -> None:
    records = await _read(ctx, "poll", key)
    if records is None:
        ctx.log.info("loomio webhook about a poll none of the keys can read; ignored")
        return
    view = poll_view(ctx.config.server_url, records)
    if not _ours(ctx, view.group_id):
        ctx.log.warning("loomio webhook about a poll of another group; ignored")
        return
    poll: dict[str, Any] = records["polls"][0]
    kind = poll_kind(hint, poll, records)
    initiator = None
    if kind == "poll_created" and view.author_id is not None:
        initiator = Initiator(str(view.author_id), "loomio")
    ctx.emit_event(kind, {"kind": kind, "poll": view.model_dump(mode="json")}, initiator)


async def _discussion_event(ctx: Ctx, hint: Hint, key: str) -> None:
    records = await _read(ctx, "discussion", key)
    if records is None:
        ctx.log.info("loomio webhook about a thread none of the keys can read; ignored")
        return
    view = discussion_view(ctx.config.server_url, records)
    if not _ours(ctx, view.group_id):
        ctx.log.warning("loomio webhook about a thread of another group; ignored")
        return
    kind = discussion_kind(hint)
    data: dict[str, Any] = {"kind": kind, "discussion": view.model_dump(mode="json")}
    initiator = None
    if kind == "new_comment":
        data["comment_id"] = hint.comment_id
    elif view.author_id is not None:
        initiator = Initiator(str(view.author_id), "loomio")
    ctx.emit_event(kind, data, initiator)
