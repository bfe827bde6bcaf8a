"""The resources one gateway process shares: settings, database, plugins, secrets, HTTP client,
job queue and a few caches. The API, the workers and the CLI each open one :class:`Runtime` and
pass it to the services, so a service behaves the same wherever it is called from.

It is built whole: the queue is chosen before it is opened (the embedded runner's queue is given
its job runner afterwards, by the runner, without touching the runtime).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel

from metagov import tracing
from metagov.cache import BoundedCache
from metagov.config import Settings
from metagov.crypto import SecretBox
from metagov.db.engine import Database, Session
from metagov.jobs.queue import JobQueue, NullQueue, send_doorbells, take_doorbells
from metagov.outbound import guarded_client, policy_of
from metagov.plugins.registry import PluginRegistry


@dataclass
class Caches:
    """Per-process caches of values that are costly to derive; each is keyed by what changes
    when the value does (see :mod:`metagov.cache`)."""

    # Decrypted, validated plugin configs, by (instance id, config version, ciphertext).
    configs: BoundedCache[tuple[int, int, str | None], BaseModel] = field(
        default_factory=BoundedCache
    )
    # Decrypted Driver signing secrets, by their ciphertext (a rotation changes it).
    signing_secrets: BoundedCache[str, str] = field(default_factory=BoundedCache)
    # The plugin instances a webhook URL names, by (community slug, plugin); every webhook stored
    # with them checks in the same statement that they are still current.
    webhook_targets: BoundedCache[tuple[str, str], tuple[Any, ...]] = field(
        default_factory=BoundedCache
    )


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    registry: PluginRegistry
    secrets: SecretBox
    http: httpx.AsyncClient
    queue: JobQueue
    # For URLs a Driver or a community chose (deliveries, callbacks, self-hosted platforms):
    # connections only to public addresses, or to those METAGOV_OUTBOUND_ALLOWLIST names.
    outbound: httpx.AsyncClient
    caches: Caches = field(default_factory=Caches)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Session]:
        """A write transaction, committed on exit; the doorbells rung in it are sent after the
        commit (never if it rolls back)."""
        async with self.db.transaction() as session:
            yield session
        await send_doorbells(self.queue, take_doorbells(session))

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        registry: PluginRegistry | None = None,
        *,
        queue: JobQueue | None = None,
    ) -> AsyncIterator[Runtime]:
        db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=settings.db_pool_pre_ping,
        )
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.http_timeout_seconds),
            follow_redirects=False,
            headers={"User-Agent": "metagov-gateway"},
            transport=tracing.client_transport(),
        )
        outbound = guarded_client(
            policy_of(settings.environment, settings.outbound_allowlist),
            timeout=settings.http_timeout_seconds,
        )
        try:
            yield cls(
                settings=settings,
                db=db,
                registry=registry
                or PluginRegistry.discover(
                    allow=settings.plugins_allow, block=settings.plugins_block
                ),
                secrets=SecretBox([k.get_secret_value() for k in settings.secret_keys]),
                http=http,
                queue=queue or NullQueue(),
                outbound=outbound,
            )
        finally:
            await outbound.aclose()
            await http.aclose()
            await db.dispose()
