"""The tables. Every row that matters to a Driver lives here; nothing is only in memory or Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from metagov.db.base import Base, utcnow


class Driver(Base):
    """A governance engine that uses the gateway. It authenticates with an API key (only its hash
    is stored) and owns the communities it creates."""

    __tablename__ = "drivers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    event_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Community(Base):
    """The tenant: one online community, owned by one Driver."""

    __tablename__ = "communities"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    readable_name: Mapped[str] = mapped_column(String(200), default="")
    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id"), index=True)
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
    __table_args__ = (UniqueConstraint("community_id", "name", "community_platform_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    community_platform_id: Mapped[str] = mapped_column(String(200), default="")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets: Mapped[str | None] = mapped_column(Text, default=None)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def full_name(self) -> str:
        return f"{self.plugin_name}.{self.name}"


class Event(Base):
    """Something that happened on a platform, for the Driver to hear about."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_community_id_id", "community_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    initiator: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
