"""What the operator console does: operators and their sessions, the audit log, the overview's
figures, and the repairs an operator makes.

Every repair goes through the service the API and the CLI use (replaying a delivery is
:func:`metagov.outbox.service.replay`, closing a process is
:func:`metagov.processes.service.close_process`…) and is written to the audit log: in the same
transaction when the repair is one, right after it when the repair is an orchestration that
opens its own (closing a process calls the platform).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup

from metagov import metrics, signing
from metagov.console import repository
from metagov.console.security import (
    hash_password,
    needs_rehash,
    new_token,
    token_id,
    verify_password,
)
from metagov.console.svg import Series, bar_chart
from metagov.crypto import SecretDecryptionError
from metagov.db.base import utcnow
from metagov.db.engine import Session
from metagov.db.models import (
    AuditEntry,
    Community,
    DeliveryFailure,
    Driver,
    Event,
    Operator,
    OperatorSession,
    PluginInstance,
    Process,
)
from metagov.errors import BadRequest, Conflict, NotFound
from metagov.health import service as health
from metagov.inbox import service as inbox
from metagov.instances import service as instances
from metagov.outbox import service as outbox
from metagov.processes import service as processes
from metagov.runtime import Runtime
from metagov.tenancy import service as tenancy

SESSION_LIFETIME = timedelta(hours=12)
PASSWORD_MIN_LENGTH = 12
# A signing secret typed into the console: Standard Webhooks' form, 24 to 64 random bytes.
SECRET_MIN_BYTES, SECRET_MAX_BYTES = 24, 64


# --- operators ---------------------------------------------------------------------------------


def _checked_password(password: str | None) -> str:
    if password is None:
        return secrets.token_urlsafe(18)
    if len(password) < PASSWORD_MIN_LENGTH:
        raise BadRequest(
            f"password: at least {PASSWORD_MIN_LENGTH} characters", code="weak_password"
        )
    return password


async def create_operator(session: Session, name: str, password: str | None = None) -> str:
    """Create an operator; returns the password (``password``, or a random one to show once)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise BadRequest("name: 1 to 100 characters", code="bad_name")
    if await repository.operator_named(session, name) is not None:
        raise Conflict(f"an operator named {name!r} exists", code="operator_exists")
    password = _checked_password(password)
    hashed = await asyncio.to_thread(hash_password, password)
    await repository.add(session, Operator(name=name, password_hash=hashed))
    await record(session, "cli", "operator.created", name)
    return password


async def set_password(session: Session, name: str, password: str | None = None) -> str:
    """Give an operator a new password (returned); their open sessions end."""
    operator = await _operator(session, name)
    password = _checked_password(password)
    operator.password_hash = await asyncio.to_thread(hash_password, password)
    await repository.delete_sessions_of(session, operator.id)
    await record(session, "cli", "operator.password_set", name)
    return password


async def remove_operator(session: Session, name: str) -> None:
    await repository.remove_operator(session, await _operator(session, name))
    await record(session, "cli", "operator.removed", name)


async def list_operators(session: Session) -> Sequence[Operator]:
    return await repository.operators(session)


async def _operator(session: Session, name: str) -> Operator:
    operator = await repository.operator_named(session, name)
    if operator is None:
        raise NotFound(f"no operator named {name!r}")
    return operator


# --- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    """An operator's open console session."""

    operator: str
    operator_id: int
    session_id: str
    csrf_token: str


async def sign_in(runtime: Runtime, name: str, password: str) -> tuple[str, SignedIn] | None:
    """Check the password and open a session; returns the session token for the cookie, or
    None. The hash is checked with nothing open (it takes a moment, on purpose)."""
    async with runtime.db.snapshot() as session:
        operator = await repository.operator_named(session, name)
    stored = operator.password_hash if operator is not None else None
    if not await asyncio.to_thread(verify_password, stored, password):
        return None
    assert operator is not None
    rehashed = (
        await asyncio.to_thread(hash_password, password) if needs_rehash(stored or "") else None
    )
    token, now = new_token(), utcnow()
    row = OperatorSession(
        id=token_id(token),
        operator_id=operator.id,
        csrf_token=new_token(),
        created_at=now,
        expires_at=now + SESSION_LIFETIME,
    )
    async with runtime.unit_of_work() as session:
        await repository.delete_expired_sessions(session, now)
        current = await repository.operator_named(session, name)
        if current is None or current.password_hash != stored:
            return None  # removed, or given a new password, meanwhile
        current.last_sign_in_at = now
        if rehashed is not None:
            current.password_hash = rehashed
        await repository.add(session, row)
        await record(session, name, "console.signed_in", name)
    return token, SignedIn(name, operator.id, row.id, row.csrf_token)


async def signed_in(runtime: Runtime, token: str) -> SignedIn | None:
    async with runtime.db.snapshot() as session:
        found = await repository.session_with_operator(session, token_id(token), utcnow())
    if found is None:
        return None
    row, operator = found
    return SignedIn(operator.name, operator.id, row.id, row.csrf_token)


async def sign_out(runtime: Runtime, signed: SignedIn) -> None:
    async with runtime.unit_of_work() as session:
        await repository.delete_session(session, signed.session_id)
        await record(session, signed.operator, "console.signed_out", signed.operator)


# --- audit log ---------------------------------------------------------------------------------


async def record(session: Session, who: str, action: str, target: str, **detail: Any) -> None:
    """Note a change in the audit log (never a secret: callers pass names, ids and counts)."""
    await repository.add(
        session, AuditEntry(operator=who, action=action, target=target, detail=detail)
    )


async def audit_log(session: Session, *, limit: int = 100, offset: int = 0) -> Sequence[AuditEntry]:
    return await repository.audit_entries(session, limit=limit, offset=offset)


# --- the overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The span a plot covers: ``buckets`` bars of ``width`` seconds, the last one now."""

    name: str
    width: int
    buckets: int
    label_format: str
    label_every: int

    def start(self, now: datetime) -> int:
        return (math.floor(now.timestamp() / self.width) - self.buckets + 1) * self.width

    def labels(self, now: datetime) -> list[str]:
        first = self.start(now)
        return [
            datetime.fromtimestamp(first + i * self.width, UTC).strftime(self.label_format)
            for i in range(self.buckets)
        ]


HOUR = Window("last hour", 300, 12, "%H:%M", 3)
DAY = Window("last day", 3600, 24, "%H:00", 4)


@dataclass
class Flow:
    """Events recorded and delivered per bucket of one window, for one Driver."""

    recorded: list[int]
    delivered: list[int]

    @classmethod
    def empty(cls, buckets: int) -> Flow:
        return cls([0] * buckets, [0] * buckets)


@dataclass
class DriverOverview:
    id: int
    name: str
    event_url: str | None
    endpoint_disabled_at: datetime | None
    revoked_at: datetime | None
    flows: dict[str, Flow] = field(default_factory=dict)
    charts: dict[str, Markup] = field(default_factory=dict)
    latency_p50: float | None = None
    latency_p99: float | None = None
    pending: int = 0
    failing: int = 0
    dead: int = 0


@dataclass(frozen=True)
class WorkerStatus:
    state: str  # "seen", "not seen" or "embedded"
    detail: str


@dataclass
class Overview:
    drivers: list[DriverOverview]
    inbox: list[tuple[str, int, int]]  # plugin, pending, failed
    rejected: list[tuple[str, str, int]]  # plugin, reason, count (this process)
    open_processes: list[tuple[str, int]]
    worker: WorkerStatus
    now: datetime


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def rejected_webhooks() -> list[tuple[str, str, int]]:
    """Webhooks refused before storage, by plugin and reason, as counted by this process (they
    are never stored, so the database cannot tell)."""
    found = []
    for family in metrics.WEBHOOKS_REJECTED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                found.append((sample.labels["plugin"], sample.labels["reason"], int(sample.value)))
    return sorted(found)


async def worker_status(runtime: Runtime, session: Session, *, embedded: bool) -> WorkerStatus:
    """Whether a worker is alive, from the heartbeats workers write to the database: the same
    record ``/readyz``, ``/metrics`` and ``metagov doctor`` read, so the console never tells a
    different story (and still tells it while Redis is down)."""
    if embedded:
        return WorkerStatus("embedded", "jobs run inside this gateway process")
    found = await health.worker_status(session, runtime.settings)
    if found.alive:
        many = "worker" if found.alive == 1 else "workers"
        return WorkerStatus("seen", f"{found.alive} {many} alive, last heard {_ago(found)}")
    if found.last_seen is None:
        return WorkerStatus("not seen", "no worker has ever reported to this database")
    return WorkerStatus("not seen", f"no worker alive; the last one was heard {_ago(found)}")


def _ago(found: health.WorkerStatus) -> str:
    seconds = round(found.unseen_seconds or 0.0)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _spread(rows: Sequence[tuple[int, int, int]], buckets: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(lambda: [0] * buckets)
    for driver_id, bucket, count in rows:
        if 0 <= bucket < buckets:
            out[driver_id][bucket] += count
    return out


async def overview(runtime: Runtime, *, embedded: bool) -> Overview:
    now = utcnow()
    async with runtime.db.snapshot() as session:
        drivers = {
            d.id: DriverOverview(d.id, d.name, d.event_url, d.endpoint_disabled_at, d.revoked_at)
            for d in await tenancy.list_drivers(session)
        }
        for window in (HOUR, DAY):
            start = window.start(now)
            since = datetime.fromtimestamp(start, UTC)
            recorded = _spread(
                await repository.event_counts(session, since, start, window.width), window.buckets
            )
            delivered = _spread(
                await repository.delivered_counts(session, since, start, window.width),
                window.buckets,
            )
            for driver in drivers.values():
                driver.flows[window.name] = Flow(
                    recorded.get(driver.id, [0] * window.buckets),
                    delivered.get(driver.id, [0] * window.buckets),
                )
        samples: dict[int, list[float]] = defaultdict(list)
        for driver_id, seconds in await repository.latencies(session, now - timedelta(days=1)):
            samples[driver_id].append(seconds)
        states = await repository.delivery_states(session)
        inbox_rows = await repository.inbox_counts(session)
        open_processes = await processes.open_counts(session)
        worker = await worker_status(runtime, session, embedded=embedded)
    for driver_id, status, failing, count in states:
        found = drivers.get(driver_id)
        if found is None:
            continue
        if status == "dead":
            found.dead += count
        else:
            found.pending += count
            found.failing += count if failing else 0
    for driver in drivers.values():
        driver.latency_p50 = percentile(samples[driver.id], 0.5)
        driver.latency_p99 = percentile(samples[driver.id], 0.99)
        for window in (HOUR, DAY):
            flow = driver.flows[window.name]
            driver.charts[window.name] = bar_chart(
                f"{driver.name}: events recorded and delivered, {window.name}",
                window.labels(now),
                [Series("recorded", flow.recorded), Series("delivered", flow.delivered)],
                every=window.label_every,
            )
    by_plugin: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for plugin, status, count in inbox_rows:
        by_plugin[plugin][0 if status == "pending" else 1] += count
    return Overview(
        drivers=sorted(drivers.values(), key=lambda d: d.name),
        inbox=sorted((p, pending, failed) for p, (pending, failed) in by_plugin.items()),
        rejected=rejected_webhooks(),
        open_processes=sorted(open_processes),
        worker=worker,
        now=now,
    )


# --- the pages' reads -------------------------------------------------------------------------


async def drivers(session: Session) -> tuple[Sequence[Driver], dict[int, int]]:
    """Every Driver, and how many communities each has."""
    return await tenancy.list_drivers(session), await repository.community_counts(session)


async def communities(
    session: Session, *, search: str | None, limit: int, offset: int
) -> list[tuple[Community, str, int]]:
    return await repository.communities(session, search=search, limit=limit, offset=offset)


_SECRETISH = ("secret", "token", "password", "api_key", "apikey", "authorization", "private")


def masked(config: dict[str, Any]) -> dict[str, Any]:
    """The plain config, with any field whose name sounds secret masked all the same (secret
    fields are stored apart; this guards a plugin that declared one as plain by mistake)."""
    return {
        k: "••••••" if any(w in k.lower() for w in _SECRETISH) else v for k, v in config.items()
    }


@dataclass(frozen=True)
class InstanceView:
    """A plugin instance as the console shows it: never a secret value."""

    instance: PluginInstance
    config: dict[str, Any]
    secrets_set: list[str]
    state_size: int
    last_webhook: datetime | None
    last_error: tuple[datetime, str] | None


@dataclass(frozen=True)
class CommunityView:
    community: Community
    driver_name: str
    plugins: list[InstanceView]
    processes: Sequence[Process]
    events: Sequence[Event]


def _secret_names(runtime: Runtime, instance: PluginInstance) -> list[str]:
    """Which secret fields hold a value; a page still renders when the keys cannot read them."""
    try:
        return instances.secrets_set(runtime, instance)
    except SecretDecryptionError:
        return ["(unreadable with the current METAGOV_SECRET_KEYS)"]


async def community(session: Session, runtime: Runtime, slug: str) -> CommunityView | None:
    found = await repository.community_named(session, slug)
    if found is None:
        return None
    row, driver_name = found
    enabled = await instances.list_instances(session, row.id)
    ids = [i.id for i in enabled]
    last_webhooks = await repository.last_webhooks(session, ids)
    last_errors = await repository.last_errors(session, ids)
    plugins = [
        InstanceView(
            instance=i,
            config=masked(i.config),
            secrets_set=_secret_names(runtime, i),
            state_size=len(json.dumps(i.state, separators=(",", ":"), default=str)),
            last_webhook=last_webhooks.get(i.id),
            last_error=last_errors.get(i.id),
        )
        for i in enabled
    ]
    return CommunityView(
        row,
        driver_name,
        plugins,
        await processes.list_processes(session, row, limit=50),
        await repository.recent_events(session, row.id, limit=20),
    )


async def deliveries(
    session: Session,
    *,
    driver_id: int | None,
    community: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> list[Any]:
    """Deliveries, newest first, each with its event type, community slug and Driver name."""
    return await repository.deliveries(
        session,
        driver_id=driver_id,
        community=community,
        status=status,
        limit=limit,
        offset=offset,
    )


async def delivery(session: Session, delivery_id: int) -> tuple[Any, list[DeliveryFailure]] | None:
    """A delivery (with its event, community slug and Driver name) and its failed attempts."""
    row = await repository.delivery(session, delivery_id)
    if row is None:
        return None
    return row, await outbox.failures(session, delivery_id)


async def troubled_webhooks(
    session: Session, *, limit: int = 200
) -> tuple[list[Any], list[tuple[str, str, int]]]:
    """Stored webhooks whose handling failed, and the counts of those not handled by plugin."""
    return (
        await repository.troubled_webhooks(session, limit=limit),
        await repository.inbox_counts(session),
    )


async def process_list(
    session: Session, *, status: str | None, plugin: str | None, limit: int, offset: int
) -> tuple[list[tuple[Process, str]], list[str]]:
    """Processes with their community's slug, newest first; and every plugin that has any."""
    rows = await repository.processes(
        session, status=status, plugin=plugin, limit=limit, offset=offset
    )
    return rows, await repository.process_plugins(session)


# --- repairs -----------------------------------------------------------------------------------


async def _driver(session: Session, driver_id: int) -> Driver:
    driver = await repository.driver_by_id(session, driver_id)
    if driver is None:
        raise NotFound(f"no driver {driver_id}")
    return driver


async def set_endpoint(runtime: Runtime, who: str, driver_id: int, *, enabled: bool) -> Driver:
    """Enable a Driver's event URL (its waiting deliveries go out) or disable it (they wait)."""
    async with runtime.unit_of_work() as session:
        driver = await _driver(session, driver_id)
        if enabled:
            await outbox.enable_endpoint(session, driver)
        else:
            await outbox.disable_endpoint(session, driver)
        action = "driver.endpoint_enabled" if enabled else "driver.endpoint_disabled"
        await record(session, who, action, f"driver {driver.name}")
    return driver


def check_signing_secret(secret: str) -> str:
    """A signing secret typed by an operator: ``whsec_`` and base64 of 24 to 64 bytes."""
    secret = secret.strip()
    raw = secret.removeprefix(signing.SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if (
        not secret.startswith(signing.SECRET_PREFIX)
        or not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES
    ):
        raise BadRequest(
            f"secret: a Standard Webhooks secret, {signing.SECRET_PREFIX} followed by the base64 "
            f"of {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes",
            code="bad_secret",
        )
    return secret


async def rotate_secret(
    runtime: Runtime, who: str, driver_id: int, secret: str, *, overlap_hours: float
) -> Driver:
    """Give a Driver the signing secret the operator typed (the console never shows one: the
    operator hands it to the Driver's owner); the old one keeps signing for the overlap."""
    secret = check_signing_secret(secret)
    if not 0 <= overlap_hours <= 24 * 30:
        raise BadRequest("overlap_hours: between 0 and 720", code="bad_overlap")
    async with runtime.unit_of_work() as session:
        driver = await _driver(session, driver_id)
        await tenancy.rotate_webhook_secret(
            session,
            runtime.secrets,
            driver,
            overlap=timedelta(hours=overlap_hours),
            secret=secret,
        )
        await record(
            session,
            who,
            "driver.secret_rotated",
            f"driver {driver.name}",
            overlap_hours=overlap_hours,
        )
    return driver


async def replay(
    runtime: Runtime,
    who: str,
    *,
    delivery_ids: Sequence[int] = (),
    since: datetime | None = None,
    driver_id: int | None = None,
) -> int:
    """Send deliveries again with their original ``webhook-id`` (the same operation as
    ``metagov deliveries replay``): those chosen by id, or every dead one since ``since`` (of one
    Driver, if given). Returns how many were queued."""
    if bool(delivery_ids) == (since is not None):
        raise BadRequest("choose deliveries, or a time to replay dead ones since", code="nothing")
    async with runtime.unit_of_work() as session:
        if delivery_ids:
            ids = sorted(set(delivery_ids))
            for delivery_id in ids:
                await outbox.replay(session, delivery_id=delivery_id)
            await record(
                session,
                who,
                "deliveries.replayed",
                "deliveries " + ", ".join(str(i) for i in ids),
                ids=ids,
            )
            return len(ids)
        driver = await _driver(session, driver_id) if driver_id is not None else None
        found = await outbox.replay(session, driver=driver, since=since)
        assert since is not None
        target = f"dead deliveries since {since:%Y-%m-%d %H:%M} UTC"
        if driver is not None:
            target += f" of driver {driver.name}"
        await record(
            session,
            who,
            "deliveries.replayed",
            target,
            count=len(found),
            ids=[d.id for d in found][:1000],
        )
        return len(found)


async def retry_webhook(runtime: Runtime, who: str, inbox_id: int) -> None:
    async with runtime.unit_of_work() as session:
        row = await inbox.retry(session, inbox_id)
        await record(session, who, "inbox.retried", f"webhook {inbox_id} ({row.plugin_name})")


async def close_process(runtime: Runtime, who: str, process_id: int) -> None:
    """Close a process now, as the Driver's DELETE does (the plugin's ``close`` hook runs, the
    outcome is recorded and sent to the Driver)."""
    async with runtime.db.snapshot() as session:
        found = await repository.process_with_community(session, process_id)
    if found is None:
        raise NotFound(f"no process {process_id}")
    process, community = found
    closed = await processes.close_process(
        runtime, community, process.plugin_name, process.name, process.id
    )
    async with runtime.unit_of_work() as session:
        await record(
            session,
            who,
            "process.closed",
            f"process {process.id} ({process.full_name} in {community.slug})",
            status=closed.status,
        )
