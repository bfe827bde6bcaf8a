"""The tables, and the statuses their rows move through. Every row that matters to a Driver
lives here; nothing is only in memory or Redis."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from metagov.db.base import Base, utcnow


class ProcessStatus(StrEnum):
    """Where a governance process is; ``processes.lifecycle`` says which moves are allowed."""

    CREATED = "created"
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


OPEN_PROCESS_STATUSES = (ProcessStatus.CREATED, ProcessStatus.PENDING)


class DeliveryStatus(StrEnum):
    """A delivery is pending until its endpoint takes it, or until it is given up (dead)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class DeliveryTarget(StrEnum):
    """Whom a delivery is for: the Driver's event URL, or a process's callback URL."""

    DRIVER = "driver"
    CALLBACK = "callback"


class LinkType(StrEnum):
    """How a platform account came to be linked to a MetagovID."""

    OAUTH = "oauth"
    EMAIL = "email"
    MANUAL = "manual"


class LinkQuality(StrEnum):
    """How sure the Driver (or the gateway) is that the account belongs to the person."""

    STRONG_CONFIRM = "strong_confirm"
    CONFIRMED = "confirmed"
    WEAK_CONFIRM = "weak_confirm"
    UNKNOWN = "unknown"


class InboxStatus(StrEnum):
    """A stored webhook waits (pending) until handled, or until given up (failed)."""

    PENDING = "pending"
    HANDLED = "handled"
    FAILED = "failed"


class Driver(Base):
    """A governance engine that uses the gateway. It authenticates with an API key (only its hash
    is stored) and owns the communities it creates."""

    __tablename__ = "drivers"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    event_url: Mapped[str | None] = mapped_column(Text)
    # Standard Webhooks signing secrets, encrypted like plugin secrets. During a rotation the
    # previous secret keeps signing too, until ``previous_secret_expires_at``.
    webhook_secret: Mapped[str | None] = mapped_column(Text, default=None)
    previous_webhook_secret: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set when the endpoint answered 410 Gone: nothing is sent until the Driver re-enables it.
    endpoint_disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Community(Base):
    """The tenant: one online community, owned by one Driver."""

    __tablename__ = "communities"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    readable_name: Mapped[str] = mapped_column(String(200), default="")
    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id"), index=True)
    # Counter behind ``Event.seq``; incremented under the row lock, so events of one community
    # are numbered in commit order.
    last_event_seq: Mapped[int] = mapped_column(default=0, server_default="0")
    # Event types the Driver wants delivered (glob patterns); null means all.
    subscribed_event_types: Mapped[list[Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    plugins: Mapped[list[PluginInstance]] = relationship(
        back_populates="community",
        lazy="raise",
        order_by="PluginInstance.id",
        passive_deletes=True,
    )


class PluginInstance(Base):
    """One enabled plugin in one community.

    ``config`` holds the plain fields of the plugin's config model; fields declared secret are kept
    apart in ``secrets``, encrypted. ``community_platform_id`` tells several instances of one plugin
    apart (a Slack team id, a GitHub installation id); it is the empty string when the plugin has
    no such notion, so that the uniqueness constraint works on every database.
    """

    __tablename__ = "plugin_instances"
    __table_args__ = (
        UniqueConstraint("community_id", "name", "community_platform_id"),
        UniqueConstraint("name", "platform_tenant"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    community_platform_id: Mapped[str] = mapped_column(String(200), default="")
    # For a plugin whose webhooks are platform-wide: its platform id again, which names the tenant
    # (a Slack team) whose webhooks this instance receives. Unique per plugin across all
    # communities and Drivers, so a tenant belongs to one instance; null for every other plugin.
    platform_tenant: Mapped[str | None] = mapped_column(String(200), default=None)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets: Mapped[str | None] = mapped_column(Text, default=None)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Moves with every change of config or secrets (and only then): the key of the caches of
    # decrypted configs and webhook targets, which a state write must not invalidate.
    config_version: Mapped[int] = mapped_column(default=1, server_default="1")
    state_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # When the stored credentials stop working (a refreshed access token's expiry).
    credentials_expire_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set while the platform has paused our access (see ``PluginContext.suspend_instance``).
    suspended_at: Mapped[datetime | None] = mapped_column(default=None)
    suspend_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the config last changed (state writes leave it alone).
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    community: Mapped[Community] = relationship(back_populates="plugins", lazy="raise")


class Process(Base):
    """A governance process (a vote, usually) running on a platform.

    ``closing_at`` and ``next_update_at`` are the deadlines the scheduler acts on; after a
    scheduled hook fails, ``retry_at`` holds the scheduler off until then.
    """

    __tablename__ = "processes"
    __table_args__ = (
        Index("ix_processes_status_closing_at", "status", "closing_at"),
        Index("ix_processes_status_next_update_at", "status", "next_update_at"),
        Index("ix_processes_community_id_status", "community_id", "status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    plugin_instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("plugin_instances.id", ondelete="SET NULL"), index=True
    )
    plugin_name: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(Text, default=None)
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    errors: Mapped[list[Any]] = mapped_column(default=list)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    closing_at: Mapped[datetime | None] = mapped_column(default=None)
    next_update_at: Mapped[datetime | None] = mapped_column(default=None)
    retry_at: Mapped[datetime | None] = mapped_column(default=None)
    # A hook runs on a snapshot of the row with no transaction open: it first leases the process
    # (``lease_until``, moving ``version``), and its effects are applied only if ``version`` is
    # still the one it leased with. So two hooks never run at once on one process, and a hook
    # whose lease ran out cannot overwrite what came after it.
    version: Mapped[int] = mapped_column(default=0, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def full_name(self) -> str:
        return f"{self.plugin_name}.{self.name}"


class ProcessListenKey(Base):
    """What an open process listens to (a message id, an issue number): a webhook the plugin
    maps to a key reaches only the processes listening to it, so handling a webhook costs the
    same however many processes are open."""

    __tablename__ = "process_listen_keys"
    __table_args__ = (Index("ix_process_listen_keys_instance_key", "plugin_instance_id", "key"),)

    process_id: Mapped[int] = mapped_column(
        ForeignKey("processes.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    plugin_instance_id: Mapped[int] = mapped_column(
        ForeignKey("plugin_instances.id", ondelete="CASCADE")
    )


class Event(Base):
    """Something a Driver should hear about: a platform event or a process update.

    ``seq`` numbers a community's events in commit order; deliveries follow it.
    """

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("community_id", "seq"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    seq: Mapped[int]
    source: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    initiator: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    process_id: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One event on its way to one endpoint (the Driver's event URL, or a process callback).

    Deliveries of one ``partition`` (community and endpoint) go out in ``seq`` order, one at a
    time; ``lease_until`` marks the one being attempted, so a crashed worker's attempt is retried
    once the lease runs out.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_partition_status_seq", "partition", "status", "seq"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    driver_id: Mapped[int | None] = mapped_column(ForeignKey("drivers.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    partition: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    # W3C ``traceparent`` of the work that recorded the event, when tracing is on: each attempt,
    # whichever process makes it and however late, joins that trace.
    trace_context: Mapped[str | None] = mapped_column(String(100), default=None)


class InboundWebhook(Base):
    """A verified webhook from a platform, stored before it is acknowledged (the inbox).

    ``dedupe_key`` is unique per plugin: the platform's delivery id, scoped to the instance or
    platform tenant, so a redelivered webhook is stored once and handled once. ``sender`` (the
    instance, or the platform tenant) orders handling: a sender's webhooks are handled one at a
    time, oldest first, by whichever job holds the lease on the oldest (``lease_until``).
    """

    __tablename__ = "inbound_webhooks"
    __table_args__ = (
        UniqueConstraint("plugin_name", "dedupe_key"),
        Index("ix_inbound_webhooks_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_inbound_webhooks_sender_status_id", "sender", "status", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    plugin_name: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(300))
    community_id: Mapped[int | None] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), default=None
    )
    plugin_instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("plugin_instances.id", ondelete="SET NULL"), default=None
    )
    # Platform-wide webhooks name the tenant instead of an instance.
    community_platform_id: Mapped[str | None] = mapped_column(String(200), default=None)
    sender: Mapped[str] = mapped_column(String(300), default="", server_default="")
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The URL's query parameters, without those the plugin declared secret (URL tokens).
    query: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=InboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None] = mapped_column(default=None)
    # W3C ``traceparent`` of the request that stored it, when tracing is on: the job that
    # handles it continues that trace.
    trace_context: Mapped[str | None] = mapped_column(String(100), default=None)


class TaskSchedule(Base):
    """When a plugin's periodic task next runs for one instance."""

    __tablename__ = "task_schedules"

    plugin_instance_id: Mapped[int] = mapped_column(
        ForeignKey("plugin_instances.id", ondelete="CASCADE"), primary_key=True
    )
    task_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class UsedOAuthState(Base):
    """Nonces of OAuth states already used, so a callback URL cannot be replayed. Rows can be
    deleted once ``expires_at`` has passed: an expired state is refused anyway."""

    __tablename__ = "used_oauth_states"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]


class MetagovId(Base):
    """One person in one community, across platforms.

    ``external_id`` is what Drivers see: random, so that knowing one id tells nothing of another.
    After a merge, ``primary_id`` points at the id the person is now known by; merges re-point
    every id of the merged group, so it always points at a primary (one lookup resolves any id).
    """

    __tablename__ = "metagov_ids"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), index=True
    )
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    primary_id: Mapped[int | None] = mapped_column(
        ForeignKey("metagov_ids.id", ondelete="CASCADE"), index=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LinkedAccount(Base):
    """A platform account of the person a MetagovID stands for; it always hangs on a primary id.

    An account is linked at most once per community: the unique constraint is the truth, with
    ``community_platform_id`` the empty string when absent so that it applies on every database.
    """

    __tablename__ = "linked_accounts"
    __table_args__ = (
        UniqueConstraint(
            "community_id",
            "platform_type",
            "platform_identifier",
            "community_platform_id",
            name="uq_linked_accounts_account",
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    metagov_id: Mapped[int] = mapped_column(
        ForeignKey("metagov_ids.id", ondelete="CASCADE"), index=True
    )
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    platform_type: Mapped[str] = mapped_column(String(64))
    platform_identifier: Mapped[str] = mapped_column(String(200))
    community_platform_id: Mapped[str] = mapped_column(String(200), default="")
    custom_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    link_type: Mapped[str] = mapped_column(String(16))
    link_quality: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DeliveryFailure(Base):
    """One failed attempt of a delivery: when, and what the endpoint answered (or the network
    error). Only failures are kept: a success is the delivery's own ``delivered_at`` and
    ``last_status_code``, so the hot path of a delivered event writes nothing more. A dead
    delivery's failures are therefore all its attempts, which the operator console shows."""

    __tablename__ = "delivery_failures"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class Operator(Base):
    """A person who may use the operator console. Only an argon2 hash of the password is kept.
    Drivers' API keys never open the console: operators are a separate kind of account."""

    __tablename__ = "operators"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(default=None)


class OperatorSession(Base):
    """A signed-in console session. The browser holds a signed cookie with a random token; only
    the token's SHA-256 is stored here, so a copy of the table opens no session, and signing out
    deletes the row, so a copied cookie stops working at once."""

    __tablename__ = "operator_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    # Every form of the session carries it; a cross-site form cannot know it.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class AuditEntry(Base):
    """One change made in the console: who (the operator's name, kept even if the operator is
    removed), what (an action and its target) and when."""

    __tablename__ = "audit_log"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    operator: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WorkerHeartbeat(Base):
    """A ``metagov worker`` process, as it last reported itself.

    Kept in the database rather than in Redis so that every API process and ``metagov doctor``
    see the same workers through the one connection they already have, and so that a Redis
    outage (which workers ride out) does not also erase the evidence that they are alive.
    """

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    # ``running``, ``redis unavailable`` (riding out an outage) or ``stopped``.
    state: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
