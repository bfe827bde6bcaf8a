"""Initial schema: Drivers, communities, plugin instances, processes, events and their
deliveries (the outbox), inbound webhooks (the inbox), periodic task schedules, used OAuth states.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 22:45:18.999367
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import metagov.db.base

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drivers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("api_key_hash", sa.String(length=64), nullable=False),
        sa.Column("event_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("previous_webhook_secret", sa.Text(), nullable=True),
        sa.Column(
            "previous_secret_expires_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "endpoint_disabled_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drivers")),
        sa.UniqueConstraint("api_key_hash", name=op.f("uq_drivers_api_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_drivers_name")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "used_oauth_states",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_used_oauth_states")),
    )
    op.create_table(
        "communities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("readable_name", sa.String(length=200), nullable=False),
        sa.Column("driver_id", sa.Integer(), nullable=False),
        sa.Column("last_event_seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "subscribed_event_types",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["drivers.id"], name=op.f("fk_communities_driver_id_drivers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communities")),
        sa.UniqueConstraint("slug", name=op.f("uq_communities_slug")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("communities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_communities_driver_id"), ["driver_id"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "initiator",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("process_id", sa.Integer(), nullable=True),
        sa.Column("created_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_events_community_id_communities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("community_id", "seq", name=op.f("uq_events_community_id_seq")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "plugin_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("community_platform_id", sa.String(length=200), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("secrets", sa.Text(), nullable=True),
        sa.Column(
            "state",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_plugin_instances_community_id_communities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_instances")),
        sa.UniqueConstraint(
            "community_id",
            "name",
            "community_platform_id",
            name=op.f("uq_plugin_instances_community_id_name_community_platform_id"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("driver_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("partition", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", metagov.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_deliveries_community_id_communities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["driver_id"],
            ["drivers.id"],
            name=op.f("fk_deliveries_driver_id_drivers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_deliveries_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            "ix_deliveries_partition_status_seq", ["partition", "status", "seq"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "inbound_webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plugin_name", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=300), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=True),
        sa.Column("plugin_instance_id", sa.Integer(), nullable=True),
        sa.Column("community_platform_id", sa.String(length=200), nullable=True),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_inbound_webhooks_community_id_communities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plugin_instance_id"],
            ["plugin_instances.id"],
            name=op.f("fk_inbound_webhooks_plugin_instance_id_plugin_instances"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_webhooks")),
        sa.UniqueConstraint(
            "plugin_name", "dedupe_key", name=op.f("uq_inbound_webhooks_plugin_name_dedupe_key")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("inbound_webhooks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inbound_webhooks_status_next_attempt_at",
            ["status", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "processes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("plugin_instance_id", sa.Integer(), nullable=True),
        sa.Column("plugin_name", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "outcome",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "errors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("closing_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_update_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("retry_at", metagov.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_processes_community_id_communities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plugin_instance_id"],
            ["plugin_instances.id"],
            name=op.f("fk_processes_plugin_instance_id_plugin_instances"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("processes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_processes_community_id_status", ["community_id", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_processes_plugin_instance_id"), ["plugin_instance_id"], unique=False
        )
        batch_op.create_index(
            "ix_processes_status_closing_at", ["status", "closing_at"], unique=False
        )
        batch_op.create_index(
            "ix_processes_status_next_update_at", ["status", "next_update_at"], unique=False
        )

    op.create_table(
        "task_schedules",
        sa.Column("plugin_instance_id", sa.Integer(), nullable=False),
        sa.Column("task_name", sa.String(length=100), nullable=False),
        sa.Column("next_run_at", metagov.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plugin_instance_id"],
            ["plugin_instances.id"],
            name=op.f("fk_task_schedules_plugin_instance_id_plugin_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plugin_instance_id", "task_name", name=op.f("pk_task_schedules")),
    )


def downgrade() -> None:
    op.drop_table("task_schedules")
    with op.batch_alter_table("processes", schema=None) as batch_op:
        batch_op.drop_index("ix_processes_status_next_update_at")
        batch_op.drop_index("ix_processes_status_closing_at")
        batch_op.drop_index(batch_op.f("ix_processes_plugin_instance_id"))
        batch_op.drop_index("ix_processes_community_id_status")

    op.drop_table("processes")
    with op.batch_alter_table("inbound_webhooks", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_webhooks_status_next_attempt_at")

    op.drop_table("inbound_webhooks")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_next_attempt_at")
        batch_op.drop_index("ix_deliveries_partition_status_seq")
        batch_op.drop_index(batch_op.f("ix_deliveries_event_id"))

    op.drop_table("deliveries")
    op.drop_table("plugin_instances")
    op.drop_table("events")
    with op.batch_alter_table("communities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_communities_driver_id"))

    op.drop_table("communities")
    op.drop_table("used_oauth_states")
    op.drop_table("drivers")
