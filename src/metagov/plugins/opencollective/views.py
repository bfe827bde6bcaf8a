"""Open Collective's GraphQL answers as the plugin's models, and what belongs to the collective."""

from __future__ import annotations

from typing import Any

from metagov.plugins.opencollective.schemas import (
    AccountView,
    ConversationView,
    ExpenseView,
    OpenCollectiveConfig,
)
from metagov.plugins.sdk import PluginContext, UpstreamError

Ctx = PluginContext[OpenCollectiveConfig]


def _account(raw: Any) -> AccountView | None:
    if not isinstance(raw, dict) or not raw.get("id"):
        return None
    return AccountView(
        id=str(raw["id"]), slug=raw.get("slug"), name=raw.get("name"), type=raw.get("type")
    )


def website(ctx: Ctx) -> str:
    return str(ctx.settings.oauth_url).rstrip("/")


def slugs(ctx: Ctx) -> set[str]:
    """The collective's slug and those of its projects and events (as ``initialize`` found
    them)."""
    found = {ctx.config.collective_slug.lower()}
    found.update(str(c.get("slug", "")).lower() for c in ctx.state.get("children", []))
    return found


def legacy_ids(ctx: Ctx) -> set[int]:
    ids = {(ctx.state.get("collective") or {}).get("legacyId")}
    ids.update(c.get("legacyId") for c in ctx.state.get("children", []))
    return {i for i in ids if isinstance(i, int)}


def expense_is_ours(ctx: Ctx, expense: dict[str, Any]) -> bool:
    """Whether an expense (as Open Collective reports it) was submitted to the collective or to
    one of its projects or events."""
    account = expense.get("account") or {}
    parent = account.get("parent") or {}
    return bool(
        str(account.get("slug", "")).lower() in slugs(ctx)
        or str(parent.get("slug", "")).lower() == ctx.config.collective_slug.lower()
    )


def expense_view(ctx: Ctx, raw: dict[str, Any]) -> ExpenseView:
    if not raw.get("id") or not isinstance(raw.get("legacyId"), int):
        raise UpstreamError("Open Collective sent an expense without id")
    account = raw.get("account") or {}
    owner = account.get("slug") or ctx.config.collective_slug
    return ExpenseView(
        id=str(raw["id"]),
        legacy_id=raw["legacyId"],
        description=raw.get("description"),
        amount=raw.get("amount"),
        currency=raw.get("currency"),
        type=raw.get("type"),
        status=raw.get("status"),
        created_at=raw.get("createdAt"),
        tags=raw.get("tags"),
        account=_account(account),
        payee=_account(raw.get("payee")),
        created_by=_account(raw.get("createdByAccount")),
        url=f"{website(ctx)}/{owner}/expenses/{raw['legacyId']}",
    )


def conversation_is_ours(ctx: Ctx, raw: dict[str, Any]) -> bool:
    return str((raw.get("account") or {}).get("slug", "")).lower() in slugs(ctx)


def reactions(raw: dict[str, Any]) -> dict[str, int]:
    found = (raw.get("body") or {}).get("reactions") or {}
    if not isinstance(found, dict):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, int)}


def conversation_view(ctx: Ctx, raw: dict[str, Any]) -> ConversationView:
    if not raw.get("id"):
        raise UpstreamError("Open Collective sent a conversation without id")
    owner = (raw.get("account") or {}).get("slug") or ctx.config.collective_slug
    return ConversationView(
        id=str(raw["id"]),
        slug=raw.get("slug"),
        title=raw.get("title"),
        tags=raw.get("tags"),
        created_at=raw.get("createdAt"),
        comments_count=(raw.get("stats") or {}).get("commentsCount"),
        reactions=reactions(raw),
        url=f"{website(ctx)}/{owner}/conversations/{raw.get('slug') or 'conversation'}-{raw['id']}",
    )
