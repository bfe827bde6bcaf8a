"""The Open Collective plugin: a community's collective through the GraphQL API v2.

Installed through OAuth by an account that administers exactly one collective (that collective
is the instance; ``community_platform_id`` is its slug), or enabled by hand with a personal
token. Open Collective does not sign its webhooks, so the instance's hook URL carries a secret
token, compared in constant time before anything is stored; the expense a webhook names is then
read again through the API, and must belong to the collective, before the Driver hears of it.
``initialize`` registers that hook URL with Open Collective when the token may, and tells the
Driver when it could not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from metagov.plugins.opencollective import queries
from metagov.plugins.opencollective.client import (
    OAUTH,
    OpenCollectiveApiError,
    OpenCollectiveClient,
    client_for,
    request_token,
)
from metagov.plugins.opencollective.schemas import (
    CommentView,
    ConversationView,
    CreateComment,
    CreateConversation,
    ExpenseView,
    ListMembers,
    Members,
    MemberView,
    OpenCollectiveConfig,
    OpenCollectiveSettings,
    ProcessExpense,
)
from metagov.plugins.opencollective.views import (
    conversation_is_ours,
    conversation_view,
    expense_is_ours,
    expense_view,
    legacy_ids,
)
from metagov.plugins.opencollective.votes import ConversationVote
from metagov.plugins.sdk import (
    AuthType,
    CredentialsRejected,
    EventType,
    Initiator,
    OAuthError,
    OAuthInstall,
    Plugin,
    PluginContext,
    PluginError,
    WebhookAccepted,
    WebhookRequest,
    WebhookScope,
    action,
    check_url_token,
)

Ctx = PluginContext[OpenCollectiveConfig]
EXPENSE_PREFIX = "collective.expense."


def expense_event_name(activity_type: str) -> str:
    """``collective.expense.scheduledForPayment`` → ``expense_scheduled_for_payment``."""
    suffix = activity_type.removeprefix(EXPENSE_PREFIX).replace(".", "_")
    return "expense_" + re.sub(r"(?<!^)(?=[A-Z])", "_", suffix).lower()


class OpenCollectivePlugin(Plugin[OpenCollectiveConfig]):
    """Open Collective: members, conversations, expense decisions and reaction votes."""

    name = "opencollective"
    auth_type = AuthType.OAUTH
    config_model = OpenCollectiveConfig
    community_platform_id_field = "collective_slug"
    webhooks = WebhookScope.INSTANCE
    webhook_secret_params = frozenset({"token"})
    settings_model = OpenCollectiveSettings
    processes = (ConversationVote,)
    event_types = (
        EventType("expense_created", "An expense was submitted; data is the expense"),
        EventType("expense_approved", "An expense was approved"),
        EventType("expense_unapproved", "An approval was withdrawn"),
        EventType("expense_rejected", "An expense was rejected"),
        EventType("expense_paid", "An expense was paid (other collective.expense.* follow suit)"),
    )

    @property
    def app(self) -> OpenCollectiveSettings:
        settings: OpenCollectiveSettings = self.settings
        return settings

    # --- enabling ----------------------------------------------------------------------------

    async def initialize(self, ctx: Ctx) -> None:
        """Check the token against the collective, remember its ids (and those of its projects
        and events), and register the hook URL."""
        slug = ctx.config.collective_slug
        try:
            data = await client_for(ctx).run(queries.ACCOUNT, {"slug": slug}, f"account {slug}")
        except OpenCollectiveApiError as exc:
            if "NotFound" in exc.codes:
                data = {"account": None}
            else:
                raise
        account = data.get("account")
        if not isinstance(account, dict) or not account.get("id"):
            raise PluginError(
                f"collective_slug: Open Collective has no account {slug!r}",
                code="unknown_collective",
            )
        keep = ("id", "legacyId", "slug", "name", "type")
        ctx.state.set("collective", {k: account.get(k) for k in keep})
        children = (account.get("childrenAccounts") or {}).get("nodes") or []
        ctx.state.set("children", [{k: c.get(k) for k in keep} for c in children if c])
        await _register_webhook(ctx)

    # --- OAuth -------------------------------------------------------------------------------

    def oauth_authorize_url(self, *, kind: str, redirect_uri: str, state: str) -> str:
        if not self.app.client_id:
            raise PluginError(
                "the Open Collective app is not configured (METAGOV_OPENCOLLECTIVE__CLIENT_ID)"
            )
        query = {
            "client_id": self.app.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": ",".join(self.app.scopes) if kind == "app" else "account",
            "state": state,
        }
        return f"{self.app.oauth_url}/oauth/authorize?{urlencode(query)}"

    async def oauth_exchange(
        self,
        *,
        kind: str,
        code: str | None,
        redirect_uri: str,
        http: httpx.AsyncClient,
        params: Mapping[str, str],
    ) -> OAuthInstall:
        if not self.app.client_id or self.app.client_secret is None:
            raise OAuthError("not_configured", "The Open Collective app is not configured")
        if not code:
            raise OAuthError("missing_code", "The install was not approved")
        try:
            granted = await request_token(
                http,
                f"{self.app.api_url}/oauth/token",
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "client_id": self.app.client_id,
                    "client_secret": self.app.client_secret.get_secret_value(),
                },
            )
        except OpenCollectiveApiError as exc:
            error = min(exc.codes) if exc.codes else "invalid_grant"
            raise OAuthError(error, "Open Collective refused the authorization code") from None
        token = str(granted["access_token"])
        oc = OpenCollectiveClient(http, self.app.api_url, token, token_type=OAUTH)
        try:
            data = await oc.run(queries.LOGGED_IN_ACCOUNT, {}, "the installing account")
        except (OpenCollectiveApiError, CredentialsRejected):
            raise OAuthError(
                "account_unreadable", "Open Collective did not show the installing account"
            ) from None
        me = data.get("loggedInAccount") or {}
        installer = me.get("slug")
        if kind == "user":
            return OAuthInstall(None, {}, installer)
        admin_of = me.get("memberOf") or {}
        accounts = [n.get("account") or {} for n in admin_of.get("nodes") or []]
        total = admin_of.get("totalCount", len(accounts))
        if total != 1 or not accounts or not accounts[0].get("slug"):
            raise OAuthError(
                "not_one_collective",
                f"The Open Collective account {installer!r} administers {total} collectives; the "
                "account that installs must administer exactly one (use an account made for it)",
            )
        slug = str(accounts[0]["slug"])
        config: dict[str, Any] = {
            "collective_slug": slug,
            "access_token": token,
            "token_type": OAUTH,
        }
        if granted.get("refresh_token"):
            config["refresh_token"] = str(granted["refresh_token"])
        return OAuthInstall(slug, config, installer, credentials_expire_at=_expiry(granted))

    async def refresh_credentials(self, ctx: Ctx) -> None:
        """Trade the refresh token for a new access token. A token that cannot be refreshed is a
        400 naming why (at enable time: the config is wrong; later: install again)."""
        refresh = ctx.config.refresh_token
        if ctx.config.token_type != OAUTH or refresh is None or self.app.client_secret is None:
            raise PluginError(
                "Open Collective rejected the access token and it cannot be refreshed; install "
                "the plugin again",
                code="credentials_rejected",
            )
        try:
            granted = await request_token(
                ctx.http,
                f"{self.app.api_url}/oauth/token",
                {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh.get_secret_value(),
                    "client_id": self.app.client_id or "",
                    "client_secret": self.app.client_secret.get_secret_value(),
                },
            )
        except OpenCollectiveApiError as exc:
            raise PluginError(
                f"Open Collective refused to refresh the access token ({exc.detail}); install "
                "the plugin again",
                code="credentials_rejected",
            ) from None
        ctx.update_secrets(
            {
                "access_token": str(granted["access_token"]),
                "refresh_token": str(granted.get("refresh_token") or refresh.get_secret_value()),
            },
            expires_at=_expiry(granted),
        )

    # --- actions -----------------------------------------------------------------------------

    @action("list-members", description="The collective's members (contributors, admins…)")
    async def list_members(self, ctx: Ctx, params: ListMembers) -> Members:
        data = await client_for(ctx).run(
            queries.MEMBERS,
            {"slug": ctx.config.collective_slug, "limit": params.limit, "offset": params.offset},
            "the collective's members",
        )
        found = (data.get("account") or {}).get("members") or {}
        nodes = [n for n in found.get("nodes") or [] if isinstance(n, dict) and n.get("id")]
        return Members(
            total_count=int(found.get("totalCount") or 0),
            members=[MemberView.model_validate(n) for n in nodes],
        )

    @action("create-conversation", description="Start a conversation on the collective's page")
    async def create_conversation(self, ctx: Ctx, params: CreateConversation) -> ConversationView:
        data = await client_for(ctx).run(
            queries.CREATE_CONVERSATION,
            {
                "title": params.title,
                "html": params.html,
                "account": {"slug": ctx.config.collective_slug},
                "tags": params.tags,
            },
            "the conversation",
        )
        return conversation_view(ctx, data.get("createConversation") or {})

    @action("create-comment", description="Comment in one of the collective's conversations")
    async def create_comment(self, ctx: Ctx, params: CreateComment) -> CommentView:
        oc = client_for(ctx)
        found = await oc.run(
            queries.CONVERSATION, {"id": params.conversation_id}, "the conversation"
        )
        conversation = found.get("conversation")
        if not isinstance(conversation, dict) or not conversation_is_ours(ctx, conversation):
            raise _not_ours("conversation", params.conversation_id)
        data = await oc.run(
            queries.CREATE_COMMENT,
            {"comment": {"html": params.html, "conversation": {"id": params.conversation_id}}},
            "the comment",
        )
        comment = data.get("createComment") or {}
        return CommentView(
            id=str(comment.get("id")), created_at=comment.get("createdAt"), html=comment.get("html")
        )

    @action("process-expense", description="Approve, unapprove or reject one of its expenses")
    async def process_expense(self, ctx: Ctx, params: ProcessExpense) -> ExpenseView:
        oc = client_for(ctx)
        found = await oc.run(queries.EXPENSE, {"expense": params.reference()}, "the expense")
        expense = found.get("expense")
        if not isinstance(expense, dict) or not expense_is_ours(ctx, expense):
            raise _not_ours("expense", str(params.expense_id))
        data = await oc.run(
            queries.PROCESS_EXPENSE,
            {"expense": {"id": expense["id"]}, "action": params.action, "message": params.message},
            f"the expense decision ({params.action})",
        )
        return expense_view(ctx, data.get("processExpense") or {})

    # --- webhooks ----------------------------------------------------------------------------

    async def verify_webhook(
        self, request: WebhookRequest, config: OpenCollectiveConfig | None
    ) -> WebhookAccepted:
        assert config is not None  # instance webhooks always come with their config
        check_url_token(request, config.webhook_token)
        try:
            activity = request.json()
        except (ValueError, UnicodeDecodeError):
            return WebhookAccepted()
        # Each activity has its own id; Open Collective does not retry, but a repeat is one.
        found = activity.get("id") if isinstance(activity, dict) else None
        return WebhookAccepted(delivery_id=f"activity:{found}" if found is not None else None)

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str] | None:
        """No process listens to webhooks: votes count reactions, which Open Collective sends
        no webhook for."""
        return []

    async def receive_webhook(self, ctx: Ctx, webhook: WebhookRequest) -> None:
        try:
            activity = webhook.json()
        except (ValueError, UnicodeDecodeError):
            ctx.log.info("opencollective webhook is not JSON; ignored")
            return
        if not isinstance(activity, dict):
            return
        kind = str(activity.get("type") or "")
        if not kind.startswith(EXPENSE_PREFIX):
            return  # other activities (contributions, updates…) are not forwarded
        legacy_id = ((activity.get("data") or {}).get("expense") or {}).get("id")
        if not isinstance(legacy_id, int):
            ctx.log.info("opencollective expense webhook names no expense; ignored")
            return
        name = expense_event_name(kind)
        found = await client_for(ctx).run(
            queries.EXPENSE, {"expense": {"legacyId": legacy_id}}, "the expense"
        )
        expense = found.get("expense")
        if not isinstance(expense, dict):
            if name == "expense_deleted" and activity.get("CollectiveId") in legacy_ids(ctx):
                ctx.emit_event(name, {"legacy_id": legacy_id})
            else:
                ctx.log.info("opencollective webhook about an expense that cannot be read")
            return
        if not expense_is_ours(ctx, expense):
            ctx.log.warning("opencollective webhook about another collective's expense; ignored")
            return
        view = expense_view(ctx, expense)
        ctx.emit_event(name, view.model_dump(mode="json"), _initiator(expense, activity))


def _not_ours(what: str, ref: str) -> PluginError:
    error = PluginError(f"{what} {ref} is not one of this collective's", code="not_found")
    error.status_code = 404
    return error


def _initiator(expense: dict[str, Any], activity: dict[str, Any]) -> Initiator | None:
    """Who caused the activity, as Open Collective's own record of the expense says: its author
    for a new expense, else the individual of the expense's activity at the same time."""
    if activity.get("type") == f"{EXPENSE_PREFIX}created":
        slug = (expense.get("createdByAccount") or {}).get("slug")
    else:
        match = [
            a
            for a in expense.get("activities") or []
            if isinstance(a, dict) and a.get("createdAt") == activity.get("createdAt")
        ]
        slug = ((match[0].get("individual") or {}).get("slug")) if match else None
    return Initiator(str(slug), "opencollective") if slug else None


def _expiry(granted: Mapping[str, Any]) -> datetime | None:
    seconds = granted.get("expires_in")
    if isinstance(seconds, int | float) and seconds > 0:
        return datetime.now(UTC) + timedelta(seconds=seconds)
    return None


async def _register_webhook(ctx: Ctx) -> None:
    """Point an Open Collective webhook of the collective at this instance's hook URL, once per
    URL; if the token may not (no ``webhooks`` scope, not an admin), tell the Driver the URL to
    add by hand."""
    hook = ctx.hook_url(token=ctx.config.webhook_token.get_secret_value())
    digest = hashlib.sha256(hook.encode()).hexdigest()
    saved = ctx.state.get("webhook") or {}
    if saved.get("url_sha256") == digest:
        return
    oc = client_for(ctx)
    try:
        created = None
        if saved.get("id"):
            try:
                data = await oc.run(
                    queries.UPDATE_WEBHOOK,
                    {"webhook": {"id": saved["id"], "webhookUrl": hook}},
                    "updating the webhook",
                )
                created = data.get("updateWebhook")
            except OpenCollectiveApiError as exc:
                if "NotFound" not in exc.codes:
                    raise
        if not created:
            data = await oc.run(
                queries.CREATE_WEBHOOK,
                {"webhook": {"account": {"slug": ctx.config.collective_slug}, "webhookUrl": hook}},
                "registering the webhook",
            )
            created = data.get("createWebhook")
    except CredentialsRejected:
        raise  # the core refreshes the token and runs initialize again
    except PluginError as exc:
        ctx.tell_driver(
            webhook_registered=False,
            webhook_error=exc.detail,
            hook_url=hook,
            next_step="add hook_url as a webhook of the collective on Open Collective "
            "(collective settings → Webhooks), for all activities or the expense ones",
        )
        return
    webhook_id = (created or {}).get("id")
    ctx.state.set("webhook", {"id": webhook_id, "url_sha256": digest})
    ctx.tell_driver(webhook_registered=True, webhook_id=webhook_id)
