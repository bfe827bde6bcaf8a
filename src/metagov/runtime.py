"""The resources one gateway process shares: settings, database, plugins, secrets, HTTP client.

The API and the job runners build the same :class:`Runtime`, so a service function behaves the same
wherever it is called from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from metagov.cache import BoundedCache
from metagov.config import Settings
from metagov.crypto import SecretBox
from metagov.db.engine import SessionFactory, create_engine, create_session_factory
from metagov.jobs.queue import JobQueue, NullQueue
from metagov.plugins.registry import PluginRegistry

if TYPE_CHECKING:
    from metagov.services.webhooks import Target


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    registry: PluginRegistry
    secrets: SecretBox
    http: httpx.AsyncClient
    # Replaced by the app or the worker with the queue of their mode.
    queue: JobQueue = field(default_factory=NullQueue)
    # Decrypted, validated plugin configs, keyed by what changes when the config does.
    config_cache: BoundedCache[tuple[int, int, str | None], BaseModel] = field(
        default_factory=BoundedCache
    )
    # Decrypted Driver signing secrets, keyed by their ciphertext (a rotation changes it).
    signing_secret_cache: BoundedCache[str, str] = field(default_factory=BoundedCache)
    # The plugin instances a webhook URL names, by (community slug, plugin); every webhook stored
    # with them checks in the same statement that they are still current.
    webhook_targets: BoundedCache[tuple[str, str], tuple[Target, ...]] = field(
        default_factory=BoundedCache
    )

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, registry: PluginRegistry | None = None
    ) -> AsyncIterator[Runtime]:
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=settings.db_pool_pre_ping,
        )
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.http_timeout_seconds),
            follow_redirects=False,
            headers={"User-Agent": "metagov-gateway"},
        )
        try:
            yield cls(
                settings=settings,
                engine=engine,
                sessions=create_session_factory(engine),
                registry=registry
                or PluginRegistry.discover(
                    allow=settings.plugins_allow, block=settings.plugins_block
                ),
                secrets=SecretBox([k.get_secret_value() for k in settings.secret_keys]),
                http=http,
            )
        finally:
            await http.aclose()
            await engine.dispose()
