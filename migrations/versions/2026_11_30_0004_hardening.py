"""Hardening: a platform tenant belongs to one plugin instance, and a community's deliveries to
its Driver are ordered by the Driver's endpoint rather than by its URL.

- ``plugin_instances.platform_tenant``: the platform id of instances of plugins with
  platform-wide webhooks, unique per plugin. Where several instances already shared a tenant,
  the oldest keeps it (and its webhooks); the others are left without one.
- ``deliveries.partition`` of Driver deliveries is re-keyed from the URL to the Driver's endpoint,
  so that pending deliveries follow the Driver when its event URL changes.

Revision ID: 0004_hardening
Revises: 0003_identity
Create Date: 2026-11-30 09:00:00
"""

import hashlib
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_hardening"
down_revision: str | None = "0003_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")
DRIVER_ENDPOINT = "driver:"


def _partition(community_id: int, endpoint: str) -> str:
    return hashlib.sha256(f"{community_id}|{endpoint}".encode()).hexdigest()[:32]


def _platform_scoped_plugins() -> list[str]:
    """The installed plugins whose webhooks are platform-wide (their instances name a tenant)."""
    from metagov.plugins.registry import PluginRegistry
    from metagov.plugins.sdk import WebhookScope

    return [s.name for s in PluginRegistry.discover() if s.webhooks is WebhookScope.PLATFORM]


def upgrade() -> None:
    with op.batch_alter_table("plugin_instances") as batch:
        batch.add_column(sa.Column("platform_tenant", sa.String(length=200), nullable=True))
    bind = op.get_bind()
    for plugin in _platform_scoped_plugins():
        rows = bind.execute(
            sa.text(
                "SELECT id, community_platform_id FROM plugin_instances "
                "WHERE name = :plugin AND community_platform_id <> '' ORDER BY id"
            ),
            {"plugin": plugin},
        ).all()
        owned: set[str] = set()
        for instance_id, tenant in rows:
            if tenant in owned:
                log.warning(
                    "plugin instance %s of %s shares its tenant with an older instance; "
                    "it no longer receives the tenant's webhooks",
                    instance_id,
                    plugin,
                )
                continue
            owned.add(tenant)
            bind.execute(
                sa.text("UPDATE plugin_instances SET platform_tenant = :t WHERE id = :id"),
                {"t": tenant, "id": instance_id},
            )
    with op.batch_alter_table("plugin_instances") as batch:
        batch.create_unique_constraint(
            "uq_plugin_instances_name_platform_tenant", ["name", "platform_tenant"]
        )
    communities = bind.execute(
        sa.text("SELECT DISTINCT community_id FROM deliveries WHERE target = 'driver'")
    ).scalars()
    for community_id in list(communities):
        bind.execute(
            sa.text(
                "UPDATE deliveries SET partition = :p WHERE target = 'driver' AND community_id = :c"
            ),
            {"p": _partition(community_id, DRIVER_ENDPOINT), "c": community_id},
        )


def downgrade() -> None:
    bind = op.get_bind()
    pairs = bind.execute(
        sa.text("SELECT DISTINCT community_id, url FROM deliveries WHERE target = 'driver'")
    ).all()
    for community_id, url in pairs:
        bind.execute(
            sa.text(
                "UPDATE deliveries SET partition = :p "
                "WHERE target = 'driver' AND community_id = :c AND url = :u"
            ),
            {"p": _partition(community_id, url), "c": community_id, "u": url},
        )
    with op.batch_alter_table("plugin_instances") as batch:
        batch.drop_constraint("uq_plugin_instances_name_platform_tenant", type_="unique")
        batch.drop_column("platform_tenant")
