"""The Discourse plugin: each community connects one or more forums with an admin API key.

An instance is one forum (``community_platform_id`` = its normalised URL). Its webhooks arrive
at the instance URL ``/api/hooks/{community}/discourse``, signed by the forum with the
instance's secret and naming the forum in ``X-Discourse-Instance``; both are checked before
anything is stored, and ``X-Discourse-Event-Id`` makes a redelivery count once. Posts, topics
and changed user fields reach the Driver under the original plugin's names, every other event
under its Discourse name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from metagov.plugins.discourse.client import (
    DiscourseApiError,
    DiscourseClient,
    client_for,
)
from metagov.plugins.discourse.polls import DiscoursePoll
from metagov.plugins.discourse.schemas import (
    ById,
    CreateMessage,
    CreatePost,
    CreateTopic,
    DiscourseConfig,
    DiscourseSettings,
    GetUser,
    Locked,
    LockPost,
    PostCreatedData,
    PostOrTopic,
    TopicCreatedData,
    TopicInfo,
    UserFieldsChangedData,
    UserInfo,
)
from metagov.plugins.discourse.urls import check_reachable_safely, same_server
from metagov.plugins.discourse.webhooks import actor, event_name, payload_of, signature_matches
from metagov.plugins.sdk import (
    AuthType,
    EventType,
    Initiator,
    Plugin,
    PluginContext,
    PluginError,
    WebhookAccepted,
    WebhookRejected,
    WebhookRequest,
    WebhookScope,
    action,
)

Ctx = PluginContext[DiscourseConfig]
PAGE_SIZE = 100  # rows per page of Discourse's admin user list
FORWARDED = (
    "Forwarded under its X-Discourse-Event name, with the delivery's body as data; so is any "
    "other Discourse event"
)


class DiscoursePlugin(Plugin[DiscourseConfig]):
    """Discourse forums: events, posts and topics, and native polls."""

    name = "discourse"
    calls_configured_urls = True  # the community names its server
    auth_type = AuthType.API_KEY
    config_model = DiscourseConfig
    community_platform_id_field = "server_url"
    webhooks = WebhookScope.INSTANCE
    settings_model = DiscourseSettings
    processes = (DiscoursePoll,)
    event_types = (
        EventType("post_created", "A post was created", PostCreatedData),
        EventType("topic_created", "A topic was created", TopicCreatedData),
        EventType(
            "user_fields_changed",
            "A user's custom user fields changed (compared with the cached user list)",
            UserFieldsChangedData,
        ),
        *(
            EventType(name, FORWARDED)
            for name in (
                "post_edited",
                "post_destroyed",
                "post_recovered",
                "topic_edited",
                "topic_closed",
                "topic_destroyed",
                "user_created",
                "user_updated",
            )
        ),
    )

    @property
    def rules(self) -> DiscourseSettings:
        settings: DiscourseSettings = self.settings
        return settings

    # --- setup ------------------------------------------------------------------------------

    async def initialize(self, ctx: Ctx) -> None:
        """Check the key against the forum and cache its users (with their user fields), which
        ``user_fields_changed`` compares against."""
        check_reachable_safely(
            ctx.config.server_url,
            allow_http=self.rules.allow_http,
            allow_private=self.rules.allow_private_hosts,
        )
        forum = client_for(ctx)
        try:
            about = await forum.get("/about.json")
            users = await self._fetch_users(forum)
        except DiscourseApiError as exc:
            if exc.status in (401, 403):
                raise PluginError(
                    f"Discourse refused the API key: {exc.message}", code="discourse_auth_failed"
                ) from None
            if exc.status == 404:
                raise PluginError(
                    f"Discourse answered 404 ({exc.message}): is server_url a Discourse forum, "
                    f"and is api_username {ctx.config.api_username!r} an admin?",
                    code="discourse_auth_failed",
                ) from None
            raise
        title = about.get("about", {}).get("title") if isinstance(about, dict) else None
        ctx.state.set("forum_title", title)
        ctx.state.set("users", users)
        ctx.tell_driver(hook_url=ctx.hook_url())

    async def _fetch_users(self, forum: DiscourseClient) -> dict[str, dict[str, Any]]:
        """``{user id: {username, user_fields}}`` for the forum's active users (bots such as
        ``system`` left out), up to ``METAGOV_DISCOURSE__MAX_CACHED_USERS``."""
        limit = self.rules.max_cached_users
        listed: dict[str, str] = {}
        page = 1
        while len(listed) < limit:
            rows = await forum.get(
                "/admin/users/list/active.json", params={"page": page, "show_emails": "false"}
            )
            if not isinstance(rows, list) or not rows:
                break
            for row in rows:
                if isinstance(row, dict) and isinstance(row.get("id"), int) and row["id"] > 0:
                    listed[str(row["id"])] = str(row.get("username", ""))
            if len(rows) < PAGE_SIZE:
                break
            page += 1
        ids = list(listed)[:limit]
        gate = asyncio.Semaphore(self.rules.user_fetch_concurrency)

        async def detail(user_id: str) -> tuple[str, dict[str, Any]]:
            async with gate:
                user = await forum.get(f"/admin/users/{user_id}.json")
            fields = user.get("user_fields") if isinstance(user, dict) else None
            return user_id, {
                "username": listed[user_id],
                "user_fields": fields if isinstance(fields, dict) else {},
            }

        return dict(await asyncio.gather(*(detail(user_id) for user_id in ids)))

    # --- webhooks ---------------------------------------------------------------------------

    async def verify_webhook(
        self, request: WebhookRequest, config: DiscourseConfig | None
    ) -> WebhookAccepted:
        assert config is not None  # instance webhooks always come with their config
        given = request.headers.get("x-discourse-event-signature")
        if not given:
            raise WebhookRejected("missing_signature")
        if not signature_matches(config.webhook_secret.get_secret_value(), request.body, given):
            raise WebhookRejected("bad_signature")
        if not same_server(request.headers.get("x-discourse-instance", ""), config.server_url):
            raise WebhookRejected("wrong_instance")
        if request.headers.get("x-discourse-event") == "ping":
            return WebhookAccepted(store=False)  # the forum's "Ping" button: nothing to tell
        if payload_of(request) is None:
            raise WebhookRejected("bad_payload")
        return WebhookAccepted(delivery_id=request.headers.get("x-discourse-event-id") or None)

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str] | None:
        """Post events concern the poll in that post (polls listen to their post's id)."""
        if webhook.headers.get("x-discourse-event-type") != "post":
            return []
        post = (payload_of(webhook) or {}).get("post")
        post_id = post.get("id") if isinstance(post, dict) else None
        return [str(post_id)] if isinstance(post_id, int) else []

    async def receive_webhook(self, ctx: Ctx, webhook: WebhookRequest) -> None:
        body = payload_of(webhook)
        if body is None:
            raise PluginError("the webhook body is not a JSON object")
        event = event_name(webhook)
        forum = client_for(ctx)
        initiator = self._initiator(ctx, actor(body))
        post, topic = body.get("post"), body.get("topic")
        if event == "post_created" and isinstance(post, dict) and _ids(post, "id", "topic_id"):
            data = PostCreatedData(
                id=post["id"],
                topic_id=post["topic_id"],
                post_number=post.get("post_number"),
                raw=post.get("raw"),
                url=forum.post_url(post),
                username=post.get("username"),
                topic_title=post.get("topic_title"),
                category_id=post.get("category_id"),
            )
            ctx.emit_event(event, data.model_dump(mode="json"), initiator)
            return
        if event == "topic_created" and isinstance(topic, dict) and _ids(topic, "id"):
            created = TopicCreatedData(
                id=topic["id"],
                title=str(topic.get("title", "")),
                tags=list(topic.get("tags") or []),
                category=topic.get("category_id"),
                url=forum.topic_url(topic),
            )
            ctx.emit_event(event, created.model_dump(mode="json"), initiator)
            return
        ctx.emit_event(event, body, initiator)
        if isinstance(body.get("user"), dict) and event in ("user_created", "user_updated"):
            self._diff_user_fields(ctx, body["user"], initiator)
        elif isinstance(body.get("user"), dict) and event == "user_destroyed":
            users = dict(ctx.state.get("users") or {})
            if users.pop(str(body["user"].get("id")), None) is not None:
                ctx.state.set("users", users)

    def _diff_user_fields(self, ctx: Ctx, user: dict[str, Any], initiator: Initiator) -> None:
        """Keep the cached user list current, and tell the Driver when custom fields changed."""
        fields = user.get("user_fields")
        if not isinstance(user.get("id"), int) or not isinstance(fields, dict):
            return  # a payload without the fields says nothing about them
        key = str(user["id"])
        new_fields: dict[str, Any] = fields
        users = dict(ctx.state.get("users") or {})
        known = users.get(key)
        old_fields = known.get("user_fields") if isinstance(known, dict) else None
        if known is not None or len(users) < self.rules.max_cached_users:
            users[key] = {"username": user.get("username"), "user_fields": new_fields}
            ctx.state.set("users", users)
        before = old_fields or {}
        changed = {
            name: {"old": before.get(name), "new": new_fields.get(name)}
            for name in sorted(set(before) | set(new_fields))
            if before.get(name) != new_fields.get(name)
        }
        if not changed:
            return
        data = UserFieldsChangedData.model_validate(
            {
                "id": user["id"],
                "username": str(user.get("username", "")),
                "user_fields": new_fields,
                "old_user_fields": old_fields,
                "changed_fields": changed,
            }
        )
        ctx.emit_event("user_fields_changed", data.model_dump(mode="json"), initiator)

    def _initiator(self, ctx: Ctx, username: str | None) -> Initiator:
        bot = username is not None and username.casefold() == ctx.config.api_username.casefold()
        return Initiator(user_id=username, provider="discourse", is_metagov_bot=bot)

    # --- actions ----------------------------------------------------------------------------

    async def _created(self, ctx: Ctx, payload: dict[str, Any]) -> PostOrTopic:
        forum = client_for(ctx)
        post = await forum.post("/posts.json", json=payload)
        if not isinstance(post, dict) or not _ids(post, "id", "topic_id"):
            raise PluginError("Discourse did not say which post it created")
        return PostOrTopic(url=forum.post_url(post), topic_id=post["topic_id"], post_id=post["id"])

    @action("create-message", description="Send a private message (a new thread, or a reply)")
    async def create_message(self, ctx: Ctx, params: CreateMessage) -> PostOrTopic:
        if params.topic_id is not None:
            return await self._created(ctx, {"raw": params.raw, "topic_id": params.topic_id})
        payload = {
            "title": params.title,
            "raw": params.raw,
            "target_recipients": ",".join(params.target_usernames),
            "archetype": "private_message",
        }
        return await self._created(ctx, payload)

    @action("create-post", description="Reply in a topic")
    async def create_post(self, ctx: Ctx, params: CreatePost) -> PostOrTopic:
        return await self._created(ctx, params.model_dump(exclude_none=True))

    @action("create-topic", description="Start a topic")
    async def create_topic(self, ctx: Ctx, params: CreateTopic) -> PostOrTopic:
        return await self._created(ctx, params.model_dump(exclude_none=True))

    @action("delete-post", description="Delete a post")
    async def delete_post(self, ctx: Ctx, params: ById) -> None:
        await client_for(ctx).delete(f"/posts/{params.id}.json")

    @action("delete-topic", description="Delete a topic")
    async def delete_topic(self, ctx: Ctx, params: ById) -> None:
        await client_for(ctx).delete(f"/t/{params.id}.json")

    @action("recover-post", description="Recover a deleted post")
    async def recover_post(self, ctx: Ctx, params: ById) -> None:
        await client_for(ctx).put(f"/posts/{params.id}/recover.json")

    @action("recover-topic", description="Recover a deleted topic")
    async def recover_topic(self, ctx: Ctx, params: ById) -> None:
        await client_for(ctx).put(f"/t/{params.id}/recover.json")

    @action("lock-post", description="Lock a post against edits, or unlock it")
    async def lock_post(self, ctx: Ctx, params: LockPost) -> Locked:
        answer = await client_for(ctx).put(
            f"/posts/{params.id}/locked.json", data={"locked": "true" if params.locked else "false"}
        )
        locked = answer.get("locked") if isinstance(answer, dict) else None
        return Locked(locked=locked if isinstance(locked, bool) else params.locked)

    @action("get-topic", description="Read a topic")
    async def get_topic(self, ctx: Ctx, params: ById) -> TopicInfo:
        forum = client_for(ctx)
        topic = await forum.get(f"/t/{params.id}.json")
        if not isinstance(topic, dict):
            raise PluginError("Discourse sent no topic")
        author = (topic.get("details") or {}).get("created_by") or {}
        return TopicInfo(
            id=topic.get("id", params.id),
            title=str(topic.get("title", "")),
            slug=str(topic.get("slug", "")),
            url=forum.topic_url(topic),
            category_id=topic.get("category_id"),
            posts_count=topic.get("posts_count"),
            closed=bool(topic.get("closed")),
            archived=bool(topic.get("archived")),
            tags=list(topic.get("tags") or []),
            created_by=author.get("username") if isinstance(author, dict) else None,
            data=topic,
        )

    @action("get-user", description="Read a user, by username or id")
    async def get_user(self, ctx: Ctx, params: GetUser) -> UserInfo:
        forum = client_for(ctx)
        if params.username is not None:
            answer = await forum.get(f"/u/{quote(params.username, safe='')}.json")
            user = answer.get("user") if isinstance(answer, dict) else None
        else:
            user = await forum.get(f"/admin/users/{params.id}.json")
        if not isinstance(user, dict) or not isinstance(user.get("id"), int):
            raise PluginError("Discourse sent no user")
        username = str(user.get("username", ""))
        return UserInfo(
            id=user["id"],
            username=username,
            name=user.get("name"),
            url=f"{forum.server_url}/u/{quote(username, safe='')}",
            admin=user.get("admin"),
            moderator=user.get("moderator"),
            trust_level=user.get("trust_level"),
            user_fields=user.get("user_fields"),
            data=user,
        )


def _ids(obj: dict[str, Any], *keys: str) -> bool:
    """Whether ``obj`` has integer ids under all ``keys`` (what the typed events need)."""
    return all(isinstance(obj.get(key), int) for key in keys)
