"""Plugin SDK v2 and hooks outside transactions: separate config and state versions, stored
credentials' expiry, suspended instances, process leases, process listen keys, and the query
string, sender and lease of stored webhooks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import metagov.db.base

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIME = metagov.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("plugin_instances") as batch:
        batch.add_column(
            sa.Column("config_version", sa.Integer(), server_default="1", nullable=False)
        )
        batch.add_column(
            sa.Column("state_version", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("credentials_expire_at", TIME, nullable=True))
        batch.add_column(sa.Column("suspended_at", TIME, nullable=True))
        batch.add_column(sa.Column("suspend_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("processes") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("lease_until", TIME, nullable=True))
    with op.batch_alter_table("inbound_webhooks") as batch:
        batch.add_column(sa.Column("query", JSON, server_default="{}", nullable=False))
        batch.add_column(
            sa.Column("sender", sa.String(length=300), server_default="", nullable=False)
        )
        batch.add_column(sa.Column("lease_until", TIME, nullable=True))
    # Webhooks stored before: their sender is their instance or their platform tenant.
    op.execute(
        "UPDATE inbound_webhooks SET sender = CASE WHEN plugin_instance_id IS NOT NULL "
        "THEN 'i' || plugin_instance_id ELSE 'p' || plugin_name || ':' || "
        "coalesce(community_platform_id, '') END"
    )
    op.create_index(
        "ix_inbound_webhooks_sender_status_id",
        "inbound_webhooks",
        ["sender", "status", "id"],
        unique=False,
    )
    op.create_table(
        "process_listen_keys",
        sa.Column("process_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("plugin_instance_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plugin_instance_id"],
            ["plugin_instances.id"],
            name=op.f("fk_process_listen_keys_plugin_instance_id_plugin_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["process_id"],
            ["processes.id"],
            name=op.f("fk_process_listen_keys_process_id_processes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("process_id", "key", name=op.f("pk_process_listen_keys")),
    )
    op.create_index(
        "ix_process_listen_keys_instance_key",
        "process_listen_keys",
        ["plugin_instance_id", "key"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_process_listen_keys_instance_key", table_name="process_listen_keys")
    op.drop_table("process_listen_keys")
    op.drop_index("ix_inbound_webhooks_sender_status_id", table_name="inbound_webhooks")
    with op.batch_alter_table("inbound_webhooks") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("sender")
        batch.drop_column("query")
    with op.batch_alter_table("processes") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("version")
    with op.batch_alter_table("plugin_instances") as batch:
        batch.drop_column("suspend_reason")
        batch.drop_column("suspended_at")
        batch.drop_column("credentials_expire_at")
        batch.drop_column("state_version")
        batch.drop_column("config_version")
