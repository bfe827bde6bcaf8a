"""Inbound webhooks: verify, store once, acknowledge; then hand them to the plugin in a job.

On the request path nothing calls a platform: the plugin's ``verify_webhook`` checks the
signature over the raw bytes, the webhook is inserted into the inbox (a redelivery with the same
delivery id inserts nothing), the transaction commits, and only then does the platform get its
2xx. The job that follows runs the plugin's receiver and the open processes' ``receive_webhook``;
if it fails, the inbox row records the error and the sweep retries it later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Row,
    Select,
    String,
    Update,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from metagov import metrics
from metagov.db.base import JSONType, UTCDateTime, utcnow
from metagov.db.engine import single_statement
from metagov.db.models import (
    Community,
    InboundWebhook,
    PluginInstance,
    Process,
    ProcessListenKey,
)
from metagov.errors import Conflict, NotFound, ServiceUnavailable, Unauthorized
from metagov.jobs.queue import Job, send_doorbells, take_doorbells, unit_of_work
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import (
    WebhookAccepted,
    WebhookRejected,
    WebhookReply,
    WebhookRequest,
    WebhookScope,
)
from metagov.runtime import Runtime
from metagov.services import deliveries, lifecycle
from metagov.services import plugins as plugin_service
from metagov.services import processes as process_service

log = logging.getLogger(__name__)

PENDING, HANDLED, FAILED = "pending", "handled", "failed"
# Headers worth keeping with a stored webhook: the platform's own, not proxies' or cookies.
_DROP_HEADERS = frozenset({"authorization", "cookie", "forwarded", "x-forwarded-for", "x-real-ip"})
ACK = WebhookReply(body={"ok": True})


def handle_job(inbox_id: int) -> Job:
    return Job.of("handle_webhook", inbox_id)


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
_INBOX_COLUMNS = (
    "plugin_name",
    "dedupe_key",
    "community_id",
    "plugin_instance_id",
    "community_platform_id",
    "headers",
    "query",
    "body",
    "status",
    "attempts",
    "next_attempt_at",
    "received_at",
)


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
            bindparam("request_headers", type_=JSONType),
            bindparam("request_query", type_=JSONType),
            bindparam("request_body", type_=LargeBinary()),
            literal(PENDING),
            literal(0),
            now,
            now,
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
        .from_select(_INBOX_COLUMNS, row)
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
        PluginInstance.community_platform_id == bindparam("platform_id"),
    )
    .limit(1)
)
# A cached target is tried once; then the targets are read afresh up to this many times.
_FRESH_LOOKS = 2


async def receive(
    runtime: Runtime,
    plugin: str,
    request: WebhookRequest,
    *,
    community_slug: str | None = None,
) -> WebhookReply:
    """Verify and store one webhook; returns what to answer the platform.

    This is the busiest route, so it stays lean: Core statements built once, the plugin's config
    from the per-process cache, and the doorbell after the commit. A webhook for an instance
    usually costs one statement: the instance comes from memory and the insert checks it is
    still current (see :func:`_insert_if_current`).
    """
    spec = runtime.registry.get(plugin)
    scope = WebhookScope.INSTANCE if community_slug is not None else WebhookScope.PLATFORM
    if spec.webhooks is not scope:
        raise NotFound(f"plugin {plugin!r} takes no webhooks at this URL")
    if community_slug is not None:
        accepted, inserted = await _receive_for_instance(runtime, spec, community_slug, request)
    else:
        accepted, inserted = await _receive_for_platform(runtime, spec, request)
    if inserted is not None:
        await send_doorbells(runtime, [handle_job(inserted)])
    return accepted.reply or ACK


async def _receive_for_instance(
    runtime: Runtime, spec: PluginSpec, slug: str, request: WebhookRequest
) -> tuple[WebhookAccepted, int | None]:
    """Verify with the instance's config and store; the stored webhook's id, or None for a
    redelivery (or a reply that stores nothing).

    The targets of ``(slug, plugin)`` are kept in memory. Whatever a stale copy could get wrong
    (an unknown instance, a rejected signature, a refused insert) is tried again with targets
    read afresh, so a change of config, secret or instances is seen by the next webhook.
    """
    key = (slug, spec.name)
    targets = runtime.webhook_targets.get(key)
    fresh = targets is None
    for _ in range(_FRESH_LOOKS + 1):
        if targets is None:
            targets = await _load_targets(runtime, spec, slug)
            runtime.webhook_targets.put(key, targets)
        try:
            target = plugin_service.choose_instance(
                targets, slug, spec.name, request.query.get("community_platform_id")
            )
            config = plugin_service.load_config(runtime, spec, target)
            accepted = await spec.plugin.verify_webhook(request, config)
        except WebhookRejected as exc:
            if fresh:
                raise _rejected(spec, exc) from None
            targets, fresh = None, True  # counted and logged only if fresh targets agree
            continue
        except (NotFound, Conflict):
            if fresh:
                raise
            targets, fresh = None, True
            continue
        if not accepted.store:
            return accepted, None
        params = _inbox_values(spec, request, accepted, f"i{target.id}")
        params.update(
            instance_id=target.id,
            config_version=target.config_version,
            slug=slug,
            instances=len(targets),
        )
        try:
            async with single_statement(runtime.engine) as conn:
                inserted: int | None = await conn.scalar(
                    _INSERTS_IF_CURRENT[conn.dialect.name], params
                )
        except IntegrityError:
            # The instance was disabled while the statement ran: look again.
            targets, fresh = None, True
            continue
        if inserted is not None:
            metrics.WEBHOOKS_RECEIVED.labels(spec.name).inc()
            return accepted, inserted
        # Nothing stored: a redelivery, or the targets changed since they were read.
        current = await _load_targets(runtime, spec, slug)
        runtime.webhook_targets.put(key, current)
        if current == targets:
            metrics.WEBHOOKS_RECEIVED.labels(spec.name).inc()
            return accepted, None
        targets, fresh = current, True
    raise ServiceUnavailable(
        f"plugin {spec.name!r} in community {slug!r} is being reconfigured; retry",
        code="plugin_changing",
    )


async def _load_targets(runtime: Runtime, spec: PluginSpec, slug: str) -> tuple[Target, ...]:
    """The community's instances of the plugin; 404 if the community does not exist."""
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(_TARGETS, {"slug": slug, "plugin": spec.name})).all()
        if not rows and (await conn.scalar(_COMMUNITY_EXISTS, {"slug": slug})) is None:
            raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return tuple(Target(*row) for row in rows)


def _rejected(spec: PluginSpec, exc: WebhookRejected) -> Unauthorized:
    """Count and log a rejected webhook; the error to answer with."""
    metrics.WEBHOOKS_REJECTED.labels(spec.name, exc.reason).inc()
    log.info("webhook rejected", extra={"plugin": spec.name, "reason": exc.reason})
    return Unauthorized(f"webhook rejected: {exc.reason}", code="webhook_rejected")


def _inbox_values(
    spec: PluginSpec, request: WebhookRequest, accepted: WebhookAccepted, scope: str
) -> dict[str, Any]:
    """The stored webhook's own values. Its dedupe key is the platform's delivery id (or the
    body's hash) within its sender: a redelivery stores nothing."""
    delivery = accepted.delivery_id or "sha256:" + hashlib.sha256(request.body).hexdigest()
    return {
        "dedupe": f"{scope}:{delivery}"[:300],
        "platform_id": accepted.community_platform_id,
        "request_headers": {k: v for k, v in request.headers.items() if k not in _DROP_HEADERS},
        "request_query": {
            k: v for k, v in request.query.items() if k not in spec.plugin.webhook_secret_params
        },
        "request_body": request.body,
        "now": utcnow(),
    }


async def _receive_for_platform(
    runtime: Runtime, spec: PluginSpec, request: WebhookRequest
) -> tuple[WebhookAccepted, int | None]:
    """A platform-wide app's webhook: verified with the app's settings, stored for the tenant
    (the platform's team, organisation…) it names if any instance serves it."""
    try:
        accepted = await spec.plugin.verify_webhook(request, None)
    except WebhookRejected as exc:
        raise _rejected(spec, exc) from None
    if not accepted.store:
        return accepted, None
    platform_id = accepted.community_platform_id
    async with single_statement(runtime.engine) as conn:
        if (
            platform_id is None
            or (
                await conn.scalar(
                    _PLATFORM_TENANT, {"plugin": spec.name, "platform_id": platform_id}
                )
            )
            is None
        ):
            metrics.WEBHOOKS_REJECTED.labels(spec.name, "unknown_tenant").inc()
            log.info("webhook for a tenant with no instance ignored", extra={"plugin": spec.name})
            return accepted, None
        own = _inbox_values(spec, request, accepted, f"p{platform_id}")
        values = {
            "plugin_name": spec.name,
            "dedupe_key": own["dedupe"],
            "community_id": None,
            "plugin_instance_id": None,
            "community_platform_id": platform_id,
            "headers": own["request_headers"],
            "query": own["request_query"],
            "body": request.body,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": own["now"],
            "received_at": own["now"],
        }
        inserted: int | None = await conn.scalar(_INSERTS[conn.dialect.name], values)
    metrics.WEBHOOKS_RECEIVED.labels(spec.name).inc()
    return accepted, inserted


async def due_webhooks(session: AsyncSession, now: datetime, *, limit: int) -> list[int]:
    """The webhooks the sweep should ring: of the ``limit`` longest-waiting due ones, the newest
    of each sender.

    :func:`handle` takes a sender's older pending webhooks first, so ringing a sender's newest
    handles all of them, in order, with one job instead of one per webhook.
    """
    waiting = (
        select(
            InboundWebhook.id,
            InboundWebhook.plugin_name,
            InboundWebhook.plugin_instance_id,
            InboundWebhook.community_platform_id,
        )
        .where(InboundWebhook.status == PENDING, InboundWebhook.next_attempt_at <= now)
        .order_by(InboundWebhook.next_attempt_at)
        .limit(limit)
        .subquery()
    )
    newest = await session.scalars(
        select(func.max(waiting.c.id)).group_by(
            waiting.c.plugin_name, waiting.c.plugin_instance_id, waiting.c.community_platform_id
        )
    )
    return sorted(newest)


@dataclass(frozen=True)
class _OlderFirst:
    """An older webhook of the same sender is due: it must be handled first."""

    inbox_id: int


async def handle(runtime: Runtime, inbox_id: int) -> bool:
    """Handle one stored webhook, after any older one of the same sender still waiting.

    Webhooks of one plugin instance (or platform tenant) become events in the order they arrived,
    so their events reach the Driver in that order too, however the jobs were scheduled. An older
    webhook whose handler failed and is waiting for its retry does not hold the others back.
    Idempotent: a webhook already handled is skipped. Returns whether ``inbox_id`` was handled now.
    """
    current = inbox_id
    while True:
        outcome = await _handle_one(runtime, current)
        if isinstance(outcome, _OlderFirst):
            current = outcome.inbox_id
        elif current == inbox_id:
            return outcome
        else:
            current = inbox_id


@dataclass(frozen=True)
class _Taken:
    """A webhook this transaction marked handled (undone if the transaction rolls back), with
    the instances it is for when the same statement could read them."""

    plugin_name: str
    headers: dict[str, Any]
    query: dict[str, Any]
    body: bytes
    plugin_instance_id: int | None
    community_platform_id: str | None
    instances: list[tuple[PluginInstance, Community]] | None


async def _handle_one(runtime: Runtime, inbox_id: int) -> bool | _OlderFirst:
    """Run the plugin's receiver and the open processes' hooks for one stored webhook, unless an
    older webhook of the same sender is due (then say which), then deliver the events recorded.

    The webhook is marked handled first, in the statement that locks it: should its handler
    fail, the rollback undoes that too, and the failure is recorded instead.
    """
    try:
        async with unit_of_work(runtime) as session:
            taken = await _take(session, inbox_id, utcnow())
            if not isinstance(taken, _Taken):
                return taken
            spec = runtime.registry.get(taken.plugin_name)
            request = WebhookRequest(headers=taken.headers, body=taken.body, query=taken.query)
            instances = taken.instances
            if instances is None:
                instances = await _instances_of_tenant(session, taken)
            for instance, community in instances:
                await _dispatch(session, runtime, spec, instance, community, request)
            rung = take_doorbells(session, "deliver")
    except Exception as exc:
        log.exception("webhook handler failed", extra={"inbox_id": inbox_id})
        await _record_failure(runtime, inbox_id, exc)
        return False
    await deliveries.deliver_rung(runtime, rung)
    return True


async def _take(session: AsyncSession, inbox_id: int, now: datetime) -> _Taken | _OlderFirst | bool:
    """Lock a due pending webhook and mark it handled, unless an older webhook of the same sender
    is due (then say which); False if it is not pending and due any more.

    A row another job is handling is waited for (not skipped): it then is no longer pending. On
    PostgreSQL this is one statement, which also reads the webhook's instance and community; on
    SQLite, whose statements cannot write in a ``WITH``, it is three.
    """
    params = {"inbox_id": inbox_id, "now": now}
    if session.get_bind().dialect.name == "postgresql":
        found = (await session.execute(_TAKE, params)).one_or_none()
        if found is None:
            return False
        if found.older is not None:
            return _OlderFirst(found.older)
        instances = None
        if found.plugin_instance_id is not None:
            instances = [(found.PluginInstance, found.Community)]
        return _taken(found, instances)
    found = (await session.execute(_LOCK_IF_NEXT, params)).one_or_none()
    if found is None:
        return False
    if found.older is not None:
        return _OlderFirst(found.older)
    await session.execute(_MARK_HANDLED, params)
    instances = None
    if found.plugin_instance_id is not None:
        by_id = await session.execute(_INSTANCE_BY_ID, {"instance_id": found.plugin_instance_id})
        instances = [(instance, community) for instance, community in by_id]
    return _taken(found, instances)


def _taken(row: Row[Any], instances: list[tuple[PluginInstance, Community]] | None) -> _Taken:
    return _Taken(
        plugin_name=row.plugin_name,
        headers=row.headers,
        query=row.query,
        body=row.body,
        plugin_instance_id=row.plugin_instance_id,
        community_platform_id=row.community_platform_id,
        instances=instances,
    )


_WEBHOOK = (
    InboundWebhook.id,
    InboundWebhook.plugin_name,
    InboundWebhook.headers,
    InboundWebhook.query,
    InboundWebhook.body,
    InboundWebhook.plugin_instance_id,
    InboundWebhook.community_platform_id,
)


def _lock_if_next(*columns: InstrumentedAttribute[Any]) -> Select[Any]:
    """Lock a due pending webhook, and find the oldest due pending webhook of the same sender
    that came before it, if any (which must then be handled first), in one statement."""
    now = bindparam("now", type_=UTCDateTime())
    older = aliased(InboundWebhook)
    same_sender = or_(
        and_(
            InboundWebhook.plugin_instance_id.is_not(None),
            older.plugin_instance_id == InboundWebhook.plugin_instance_id,
        ),
        and_(
            InboundWebhook.plugin_instance_id.is_(None),
            older.community_platform_id.is_not_distinct_from(InboundWebhook.community_platform_id),
        ),
    )
    oldest_before = (
        select(func.min(older.id))
        .where(
            older.plugin_name == InboundWebhook.plugin_name,
            same_sender,
            older.status == PENDING,
            older.next_attempt_at <= now,
            older.id < InboundWebhook.id,
        )
        .scalar_subquery()
    )
    return (
        select(*columns, oldest_before.label("older"))
        .where(
            InboundWebhook.id == bindparam("inbox_id"),
            InboundWebhook.status == PENDING,
            InboundWebhook.next_attempt_at <= now,
        )
        .with_for_update(of=InboundWebhook)
    )


def _mark_handled(target: ColumnElement[int]) -> Update:
    return (
        update(InboundWebhook)
        .where(InboundWebhook.id == target)
        .values(status=HANDLED, handled_at=bindparam("now", type_=UTCDateTime()), last_error=None)
    )


def _take_statement() -> Select[Any]:
    """PostgreSQL's :func:`_take`: lock the webhook and look for an older one (``target``), mark
    it handled if there is none (``handled``), and read its instance and community.

    The instance and community come from the statement's snapshot: should the lock have waited
    for another job that then rolled back, they are as they were before the wait, like any other
    read of the webhook's handling. Instances are re-read under a lock before their state changes.
    """
    target = _lock_if_next(InboundWebhook.id).cte("target")
    handled = (
        _mark_handled(target.c.id)
        .where(target.c.older.is_(None))
        .returning(*_WEBHOOK)
        .cte("handled")
    )
    return (
        select(target.c.older, *handled.c, PluginInstance, Community)
        .select_from(target)
        .outerjoin(handled, true())
        .outerjoin(PluginInstance, PluginInstance.id == handled.c.plugin_instance_id)
        .outerjoin(Community, Community.id == PluginInstance.community_id)
    )


# The worker's statements, built once.
_LOCK_IF_NEXT = _lock_if_next(*_WEBHOOK)
_MARK_HANDLED = _mark_handled(bindparam("inbox_id"))
_TAKE = _take_statement()
_INSTANCES = select(PluginInstance, Community).join(
    Community, Community.id == PluginInstance.community_id
)
_INSTANCE_BY_ID = _INSTANCES.where(PluginInstance.id == bindparam("instance_id"))
_INSTANCES_OF_TENANT = _INSTANCES.where(
    PluginInstance.name == bindparam("plugin"),
    PluginInstance.community_platform_id == bindparam("platform_id"),
).order_by(PluginInstance.id)
_OPEN_PROCESSES = (
    select(Process)
    .where(
        Process.plugin_instance_id == bindparam("instance_id"),
        Process.status == lifecycle.ProcessStatus.PENDING.value,
    )
    .order_by(Process.id)
    .with_for_update()
)
# The open processes listening to one of the keys a webhook maps to, off the (instance, key)
# index: a webhook costs the same however many other processes are open.
_LISTENING_PROCESSES = (
    select(Process)
    .where(
        Process.id.in_(
            select(ProcessListenKey.process_id).where(
                ProcessListenKey.plugin_instance_id == bindparam("instance_id"),
                ProcessListenKey.key.in_(bindparam("keys", expanding=True)),
            )
        ),
        Process.status == lifecycle.ProcessStatus.PENDING.value,
    )
    .order_by(Process.id)
    .with_for_update()
)


async def _instances_of_tenant(
    session: AsyncSession, taken: _Taken
) -> list[tuple[PluginInstance, Community]]:
    """The instances a platform-wide webhook is for, each with its community (one statement)."""
    params = {"plugin": taken.plugin_name, "platform_id": taken.community_platform_id}
    found = await session.execute(_INSTANCES_OF_TENANT, params)
    return [(instance, community) for instance, community in found]


async def _dispatch(
    session: AsyncSession,
    runtime: Runtime,
    spec: PluginSpec,
    instance: PluginInstance,
    community: Community,
    request: WebhookRequest,
) -> None:
    ctx = plugin_service.build_context(runtime, spec, community, instance)
    await plugin_service.call_plugin(spec, ctx, lambda: spec.plugin.receive_webhook(ctx, request))
    if await plugin_service.save_effects(session, runtime, instance, ctx):
        return  # the platform revoked us: the instance and its processes are gone
    if not spec.processes:
        return  # a plugin with no process type has no process to tell
    keys = spec.plugin.webhook_keys(request)
    if keys is None:
        open_processes = await session.scalars(_OPEN_PROCESSES, {"instance_id": instance.id})
    elif not keys:
        return
    else:
        params = {"instance_id": instance.id, "keys": list(keys)}
        open_processes = await session.scalars(_LISTENING_PROCESSES, params)
    for process in open_processes.all():
        await process_service.receive_webhook(session, runtime, community, process, request)


async def _record_failure(runtime: Runtime, inbox_id: int, exc: Exception) -> None:
    async with unit_of_work(runtime) as session:
        row = await session.get(InboundWebhook, inbox_id)
        if row is None or row.status != PENDING:
            return
        row.attempts += 1
        row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if row.attempts >= runtime.settings.inbox_max_attempts:
            row.status = FAILED
            log.error(
                "webhook given up after %s attempts", row.attempts, extra={"inbox_id": row.id}
            )
        else:
            row.next_attempt_at = utcnow() + timedelta(seconds=min(3600, 5 * 2**row.attempts))


def request_headers(raw: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in raw.items()}
