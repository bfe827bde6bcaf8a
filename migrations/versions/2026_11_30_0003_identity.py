"""Identity: MetagovIDs (one person in one community) and the platform accounts linked to them.

Revision ID: 0003_identity
Revises: 0002
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import metagov.db.base

revision: str = "0003_identity"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIME = metagov.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "metagov_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("primary_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_metagov_ids_community_id_communities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["primary_id"],
            ["metagov_ids.id"],
            name=op.f("fk_metagov_ids_primary_id_metagov_ids"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metagov_ids")),
        sa.UniqueConstraint("external_id", name=op.f("uq_metagov_ids_external_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_metagov_ids_community_id"), "metagov_ids", ["community_id"], unique=False
    )
    op.create_index(op.f("ix_metagov_ids_primary_id"), "metagov_ids", ["primary_id"], unique=False)
    op.create_table(
        "linked_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("metagov_id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("platform_type", sa.String(length=64), nullable=False),
        sa.Column("platform_identifier", sa.String(length=200), nullable=False),
        sa.Column("community_platform_id", sa.String(length=200), nullable=False),
        sa.Column("custom_data", JSON, nullable=False),
        sa.Column("link_type", sa.String(length=16), nullable=False),
        sa.Column("link_quality", sa.String(length=16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_linked_accounts_community_id_communities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["metagov_id"],
            ["metagov_ids.id"],
            name=op.f("fk_linked_accounts_metagov_id_metagov_ids"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_linked_accounts")),
        sa.UniqueConstraint(
            "community_id",
            "platform_type",
            "platform_identifier",
            "community_platform_id",
            name="uq_linked_accounts_account",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_linked_accounts_metagov_id"), "linked_accounts", ["metagov_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_linked_accounts_metagov_id"), table_name="linked_accounts")
    op.drop_table("linked_accounts")
    op.drop_index(op.f("ix_metagov_ids_primary_id"), table_name="metagov_ids")
    op.drop_index(op.f("ix_metagov_ids_community_id"), table_name="metagov_ids")
    op.drop_table("metagov_ids")
