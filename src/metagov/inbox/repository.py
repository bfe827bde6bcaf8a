"""Every statement about stored webhooks: storing them on the request path, and the jobs'
claims on each sender's oldest waiting webhook."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    LargeBinary,
    String,
    bindparam,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from metagov.db.base import JSONType, UTCDateTime
from metagov.db.models import Community, InboundWebhook, InboxStatus, PluginInstance

PENDING = InboxStatus.PENDING.value


def instance_sender(instance_id: int) -> str:
    """The sender of webhooks posted to an instance's URL: its instance."""
    return f"i{instance_id}"


def tenant_sender(plugin: str, platform_id: str) -> str:
    """The sender of a platform-wide webhook: the platform tenant it names."""
    return f"p{plugin}:{platform_id}"


@dataclass(frozen=True)
class Target:
    """A plugin instance a webhook URL names, with what verifying and storing need."""

    id: int
    community_id: int
    community_platform_id: str
    config: dict[str, Any]
    secrets: str | None
    config_version: int
    suspended_at: datetime | None


# Statements of the request path, built once: building one costs more than running it.
_TARGETS = (
    select(
        PluginInstance.id,
        PluginInstance.community_id,
        PluginInstance.community_platform_id,
        PluginInstance.config,
        PluginInstance.secrets,
        PluginInstance.config_version,
        PluginInstance.suspended_at,
    )
    .join(Community, Community.id == PluginInstance.community_id)
    .where(Community.slug == bindparam("slug"), PluginInstance.name == bindparam("plugin"))
    .order_by(PluginInstance.id)
)
_COMMUNITY_EXISTS = select(Community.id).where(Community.slug == bindparam("slug"))
_COLUMNS = (
    "plugin_name",
    "dedupe_key",
    "community_id",
    "plugin_instance_id",
    "community_platform_id",
    "sender",
    "headers",
    "query",
    "body",
    "status",
    "attempts",
    "next_attempt_at",
    "received_at",
    "trace_context",
)


async def load_targets(conn: AsyncConnection, slug: str, plugin: str) -> tuple[Target, ...] | None:
    """The community's instances of the plugin; None if the community does not exist."""
    rows = (await conn.execute(_TARGETS, {"slug": slug, "plugin": plugin})).all()
    if not rows and (await conn.scalar(_COMMUNITY_EXISTS, {"slug": slug})) is None:
        return None
    return tuple(Target(*row) for row in rows)


def _insert_if_current(dialect: Any) -> Any:
    """Store a webhook for an instance only if the instance is still as it was when its
    signature was checked: same ``config_version`` (every config change moves it), still in the
    community the URL names, which still has as many instances of the plugin.

    This is what lets the request path keep its targets in memory and still take each webhook in
    one statement: a stale target stores nothing, and the route looks again.
    """
    siblings = aliased(PluginInstance)
    instances = (
        select(func.count())
        .where(
            siblings.community_id == PluginInstance.community_id,
            siblings.name == PluginInstance.name,
        )
        .scalar_subquery()
    )
    now = bindparam("now", type_=UTCDateTime())
    row = (
        select(
            PluginInstance.name,
            bindparam("dedupe", type_=String()),
            PluginInstance.community_id,
            PluginInstance.id,
            bindparam("platform_id", type_=String()),
            bindparam("sender_key", type_=String()),
            bindparam("request_headers", type_=JSONType),
            bindparam("request_query", type_=JSONType),
            bindparam("request_body", type_=LargeBinary()),
            literal(PENDING),
            literal(0),
            now,
            now,
            bindparam("trace_context", type_=String()),
        )
        .join(Community, Community.id == PluginInstance.community_id)
        .where(
            PluginInstance.id == bindparam("instance_id"),
            PluginInstance.config_version == bindparam("config_version"),
            Community.slug == bindparam("slug"),
            instances == bindparam("instances"),
        )
    )
    return (
        dialect.insert(InboundWebhook)
        .from_select(_COLUMNS, row)
        .on_conflict_do_nothing(index_elements=["plugin_name", "dedupe_key"])
        .returning(InboundWebhook.id)
    )


_DIALECTS = (("postgresql", postgresql), ("sqlite", sqlite))
_INSERTS_IF_CURRENT = {name: _insert_if_current(dialect) for name, dialect in _DIALECTS}
_INSERTS = {
    name: dialect.insert(InboundWebhook)
    .on_conflict_do_nothing(index_elements=["plugin_name", "dedupe_key"])
    .returning(InboundWebhook.id)
    for name, dialect in _DIALECTS
}
_PLATFORM_TENANT = (
    select(PluginInstance.id)
    .where(
        PluginInstance.name == bindparam("plugin"),
        PluginInstance.platform_tenant == bindparam("platform_id"),
    )
    .limit(1)
)


class TargetGone(Exception):
    """The instance a webhook was about to be stored for was removed meanwhile."""


async def insert_for_instance(conn: AsyncConnection, values: dict[str, Any]) -> int | None:
    """Store a webhook for an instance if it is still current; its id, or None if nothing was
    stored (a redelivery, or the instance changed: see :func:`_insert_if_current`)."""
    try:
        inserted: int | None = await conn.scalar(_INSERTS_IF_CURRENT[conn.dialect.name], values)
    except IntegrityError:
        raise TargetGone from None
    return inserted


async def tenant_exists(conn: AsyncConnection, plugin: str, platform_id: str) -> bool:
    found = await conn.scalar(_PLATFORM_TENANT, {"plugin": plugin, "platform_id": platform_id})
    return found is not None


async def insert_for_tenant(conn: AsyncConnection, values: dict[str, Any]) -> int | None:
    """Store a platform-wide webhook; its id, or None for a redelivery."""
    inserted: int | None = await conn.scalar(_INSERTS[conn.dialect.name], values)
    return inserted


# --- handling -------------------------------------------------------------------------------------

_NOW = bindparam("now", type_=UTCDateTime())
_LEASE = bindparam("new_lease", type_=UTCDateTime())
_HELD_LEASE = bindparam("held_lease", type_=UTCDateTime())
_WAITING = (
    select(InboundWebhook.id)
    .where(
        InboundWebhook.sender == bindparam("head_sender"),
        InboundWebhook.status == PENDING,
        InboundWebhook.next_attempt_at <= _NOW,
    )
    .order_by(InboundWebhook.id)
)
_HEAD = _WAITING.limit(1).scalar_subquery()
_Head = aliased(InboundWebhook)
_WEBHOOK = (
    InboundWebhook.id,
    InboundWebhook.plugin_name,
    InboundWebhook.headers,
    InboundWebhook.query,
    InboundWebhook.body,
    InboundWebhook.plugin_instance_id,
    InboundWebhook.community_platform_id,
    InboundWebhook.trace_context,
)
# Lease the sender's oldest waiting webhooks (up to ``batch``) unless another job holds the
# oldest: the sender's webhooks are then handled by one job at a time, in the order they arrived.
_CLAIM = (
    update(InboundWebhook)
    .where(
        InboundWebhook.id.in_(_WAITING.limit(bindparam("batch")).scalar_subquery()),
        or_(InboundWebhook.lease_until.is_(None), InboundWebhook.lease_until <= _NOW),
        ~select(_Head.id).where(_Head.id == _HEAD, _Head.lease_until > _NOW).exists(),
    )
    .values(lease_until=_LEASE)
    .returning(*_WEBHOOK)
)
_INSTANCES = select(PluginInstance, Community.slug).join(
    Community, Community.id == PluginInstance.community_id
)
_INSTANCE_BY_ID = _INSTANCES.where(PluginInstance.id == bindparam("instance_id"))
# A tenant's webhooks reach the one instance that holds it (``platform_tenant`` is unique).
_INSTANCES_OF_TENANT = _INSTANCES.where(
    PluginInstance.name == bindparam("plugin"),
    PluginInstance.platform_tenant == bindparam("platform_id"),
).order_by(PluginInstance.id)


@dataclass(frozen=True)
class Claimed:
    """A stored webhook this job holds the lease on."""

    id: int
    plugin_name: str
    headers: dict[str, Any]
    query: dict[str, Any]
    body: bytes
    plugin_instance_id: int | None
    community_platform_id: str | None
    trace_context: str | None
    lease: datetime


async def claim_oldest(
    conn: AsyncConnection, sender: str, now: datetime, lease: datetime, *, batch: int
) -> list[Claimed]:
    """Lease up to ``batch`` of the sender's oldest due waiting webhooks, oldest first, unless
    another job holds the oldest (nothing then). A Core statement on a connection: a job that
    finds nothing to do (most doorbells of a busy sender) costs one cheap round trip."""
    params = {"head_sender": sender, "now": now, "new_lease": lease, "batch": batch}
    rows = (await conn.execute(_CLAIM, params)).all()
    return sorted(
        (
            Claimed(
                row.id,
                row.plugin_name,
                row.headers,
                row.query,
                row.body,
                row.plugin_instance_id,
                row.community_platform_id,
                row.trace_context,
                lease,
            )
            for row in rows
        ),
        key=lambda claimed: claimed.id,
    )


async def instances_for(
    session: AsyncSession, claimed: Claimed
) -> list[tuple[PluginInstance, str]]:
    """The instances a stored webhook is for, each with its community's slug: its instance, or
    the instances serving the platform tenant it names."""
    if claimed.plugin_instance_id is not None:
        found = await session.execute(_INSTANCE_BY_ID, {"instance_id": claimed.plugin_instance_id})
    else:
        params = {"plugin": claimed.plugin_name, "platform_id": claimed.community_platform_id}
        found = await session.execute(_INSTANCES_OF_TENANT, params)
    return [(instance, slug) for instance, slug in found.all()]


_HELD = (
    InboundWebhook.id == bindparam("inbox_id"),
    InboundWebhook.lease_until == _HELD_LEASE,
    InboundWebhook.status == PENDING,
)
_MARK_HANDLED = (
    update(InboundWebhook)
    .where(
        InboundWebhook.id.in_(bindparam("inbox_ids", expanding=True)),
        InboundWebhook.lease_until == _HELD_LEASE,
        InboundWebhook.status == PENDING,
    )
    .values(
        status=InboxStatus.HANDLED.value,
        handled_at=bindparam("handled", type_=UTCDateTime()),
        lease_until=None,
        last_error=None,
    )
)


async def mark_handled(
    session: AsyncSession, inbox_ids: Sequence[int], lease: datetime, now: datetime
) -> bool:
    """Mark the held webhooks handled; False if a lease was lost meanwhile."""
    params = {"inbox_ids": list(inbox_ids), "held_lease": lease, "handled": now}
    done = await session.execute(_MARK_HANDLED, params)
    return bool(done.rowcount == len(inbox_ids))  # type: ignore[attr-defined]


async def release(session: AsyncSession, inbox_ids: Sequence[int], lease: datetime) -> None:
    """Give back the leases of webhooks this job will not handle now."""
    await session.execute(
        update(InboundWebhook)
        .where(
            InboundWebhook.id.in_(inbox_ids),
            InboundWebhook.lease_until == lease,
            InboundWebhook.status == PENDING,
        )
        .values(lease_until=None)
    )


async def held_webhook(
    session: AsyncSession, inbox_id: int, lease: datetime
) -> InboundWebhook | None:
    found: InboundWebhook | None = await session.scalar(
        select(InboundWebhook).where(*_HELD).with_for_update(),
        {"inbox_id": inbox_id, "held_lease": lease},
    )
    return found


async def due_senders(session: AsyncSession, now: datetime, *, limit: int) -> list[tuple[str, int]]:
    """Senders with a webhook due and not leased, among the ``limit`` longest waiting: each with
    its newest such webhook's id (which names the doorbell)."""
    waiting = (
        select(InboundWebhook.id, InboundWebhook.sender)
        .where(
            InboundWebhook.status == PENDING,
            InboundWebhook.next_attempt_at <= now,
            or_(InboundWebhook.lease_until.is_(None), InboundWebhook.lease_until <= now),
        )
        .order_by(InboundWebhook.next_attempt_at)
        .limit(limit)
        .subquery()
    )
    rows = await session.execute(
        select(waiting.c.sender, func.max(waiting.c.id)).group_by(waiting.c.sender)
    )
    return sorted(((sender, int(newest)) for sender, newest in rows.all()), key=lambda r: r[1])


async def pending_count(session: AsyncSession) -> int:
    found = await session.scalar(
        select(func.count()).where(InboundWebhook.status == PENDING).select_from(InboundWebhook)
    )
    return int(found or 0)


async def sender_of(session: AsyncSession, inbox_id: int) -> str | None:
    found: str | None = await session.scalar(
        select(InboundWebhook.sender).where(InboundWebhook.id == inbox_id)
    )
    return found


async def status_of(session: AsyncSession, inbox_id: int) -> str | None:
    found: str | None = await session.scalar(
        select(InboundWebhook.status).where(InboundWebhook.id == inbox_id)
    )
    return found


async def webhook_for_retry(session: AsyncSession, inbox_id: int) -> InboundWebhook | None:
    """The stored webhook ``inbox_id``, locked until the transaction ends."""
    found: InboundWebhook | None = await session.scalar(
        select(InboundWebhook).where(InboundWebhook.id == inbox_id).with_for_update()
    )
    return found
