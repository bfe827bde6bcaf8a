"""Drivers and their API keys, and the communities they own.

Only a SHA-256 hash of a Driver's API key is stored; keys carry 256 random bits, so a fast hash is
enough and lets a key be looked up by its hash. Creating or declaratively updating a community
with plugins runs each plugin's ``initialize`` first, with nothing open, then saves the community
and every instance in one short transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from metagov import signing
from metagov.crypto import SecretBox
from metagov.db.base import utcnow
from metagov.db.engine import Session
from metagov.db.models import Community, Driver, PluginInstance
from metagov.errors import BadRequest, Conflict, FieldError, InvalidInput, NotFound
from metagov.instances import service as instances
from metagov.outbound import check_url
from metagov.outbox import service as outbox
from metagov.runtime import Runtime
from metagov.tenancy import repository

KEY_PREFIX = "mgk_"
ENV_DRIVER_NAME = "default"
# What plugins asked to show the Driver once, by instance id.
Notices = dict[int, dict[str, Any]]
PluginList = Sequence[tuple[str, Mapping[str, Any]]]


# --- Drivers ------------------------------------------------------------------------------------


# A Driver's name is typed in commands and shown in logs and lists: plain characters only.
DRIVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_driver_name(name: str) -> str:
    if DRIVER_NAME.fullmatch(name) is None:
        rule = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        raise InvalidInput(
            [FieldError(loc=["name"], msg=f"must be {rule}", type="value_error")],
            detail=f"invalid Driver name {name!r}: use {rule}",
        )
    return name


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewDriver:
    """A created Driver with its credentials; this is the only time they are readable."""

    driver: Driver
    api_key: str
    webhook_secret: str


async def create_driver(
    session: Session,
    box: SecretBox,
    name: str,
    *,
    event_url: str | None = None,
    api_key: str | None = None,
) -> NewDriver:
    """Create a Driver with a new API key and a new signing secret for its events."""
    check_driver_name(name)
    _check_event_url(event_url)
    key = api_key or generate_api_key()
    secret = signing.generate_secret()
    driver = Driver(
        name=name,
        api_key_hash=hash_api_key(key),
        event_url=event_url,
        webhook_secret=box.encrypt_text(secret),
    )
    await repository.add_driver(session, driver)
    return NewDriver(driver, key, secret)


async def get_driver(session: Session, name: str) -> Driver:
    driver = await repository.driver_named(session, name)
    if driver is None:
        raise NotFound(f"no driver named {name!r}")
    return driver


async def rotate_webhook_secret(
    session: Session,
    box: SecretBox,
    driver: Driver,
    *,
    overlap: timedelta,
    secret: str | None = None,
) -> str:
    """Give the Driver a new signing secret (``secret``, or a random one). For ``overlap``,
    events carry signatures under both the old and the new secret, so the Driver can switch
    without missing a beat."""
    secret = secret or signing.generate_secret()
    driver.previous_webhook_secret = driver.webhook_secret
    driver.previous_secret_expires_at = utcnow() + overlap
    driver.webhook_secret = box.encrypt_text(secret)
    await session.flush()
    return secret


async def set_event_url(session: Session, driver: Driver, event_url: str | None) -> None:
    """Change where the Driver receives events; an endpoint disabled by a 410 is enabled again,
    and the deliveries waiting for the Driver go to the new URL."""
    _check_event_url(event_url)
    driver.event_url = event_url
    await outbox.follow_event_url(session, driver)


def _check_event_url(url: str | None) -> None:
    if url is None:
        return
    try:
        check_url(url)
    except ValueError as exc:
        raise BadRequest(f"the event URL {exc}", code="invalid_url") from None


async def list_drivers(session: Session) -> Sequence[Driver]:
    return await repository.drivers(session)


async def revoke_driver(session: Session, name: str) -> Driver:
    driver = await get_driver(session, name)
    if driver.revoked_at is None:
        driver.revoked_at = utcnow()
    return driver


async def authenticate(session: Session, api_key: str) -> Driver | None:
    """The active Driver holding ``api_key``, or None."""
    return await repository.active_driver(session, hash_api_key(api_key))


async def ensure_env_driver(
    session: Session,
    box: SecretBox,
    *,
    api_key: str,
    event_url: str | None,
    webhook_secret: str | None,
) -> Driver:
    """Make sure the Driver named ``default`` exists with this key (for containers and demos).

    Without ``webhook_secret`` a random one is made (and kept across restarts); set
    ``METAGOV_DRIVER_WEBHOOK_SECRET`` to know it, or rotate it with the CLI.
    """
    driver = await repository.driver_named(session, ENV_DRIVER_NAME)
    if driver is None:
        driver = (
            await create_driver(session, box, ENV_DRIVER_NAME, event_url=event_url, api_key=api_key)
        ).driver
    else:
        driver.api_key_hash = hash_api_key(api_key)
        driver.revoked_at = None
        if event_url is not None and event_url != driver.event_url:
            await set_event_url(session, driver, event_url)
    if webhook_secret is not None:
        driver.webhook_secret = box.encrypt_text(webhook_secret)
    await session.flush()
    return driver


# --- communities --------------------------------------------------------------------------------


async def get_for_key(
    session: Session, api_key: str, slug: str, plugin: str | None = None
) -> tuple[Driver | None, Community | None, list[PluginInstance]]:
    """The active Driver holding ``api_key``, its community ``slug`` and that community's
    instances of ``plugin`` (by id), in one query. The Driver or the community is None when
    there is no such Driver, or no such community of that Driver."""
    return await repository.driver_community_instances(session, hash_api_key(api_key), slug, plugin)


async def get_community(session: Session, driver: Driver, slug: str) -> Community:
    """The Driver's community ``slug``; 404 whether it does not exist or belongs to another."""
    community = await repository.community_of(session, driver.id, slug)
    if community is None:
        raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return community


async def get_community_by_slug(session: Session, slug: str) -> Community:
    """Any Driver's community ``slug``: only for public routes, which expose nothing of it."""
    community = await repository.community_by_slug(session, slug)
    if community is None:
        raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return community


async def _check_slug_free(runtime: Runtime, slug: str) -> None:
    async with runtime.db.snapshot() as session:
        if await repository.slug_taken(session, slug):
            raise Conflict(f"the slug {slug!r} is taken", code="slug_taken")


def _check_listed(runtime: Runtime, plugins: PluginList) -> None:
    """Every listed plugin exists (422 naming the entries that do not), and no two entries name
    the same instance (409)."""
    unknown = [
        FieldError(
            loc=["body", "plugins", i, "name"], msg=f"unknown plugin {name!r}", type="value_error"
        )
        for i, (name, _) in enumerate(plugins)
        if name not in runtime.registry.plugins
    ]
    if unknown:
        raise InvalidInput(unknown)
    seen: set[tuple[str, str]] = set()
    for index, (name, config) in enumerate(plugins):
        key = (name, instances.platform_id_of(runtime.registry.get(name), config))
        if key in seen:
            raise Conflict(f"plugins[{index}] names the same {name!r} instance as an earlier entry")
        seen.add(key)


async def _prepare_all(
    runtime: Runtime, slug: str, plugins: PluginList, existing: Sequence[PluginInstance]
) -> list[instances.Prepared]:
    """Validate each listed config and run its plugin's ``initialize``, with nothing open."""
    prepared = []
    for index, (name, config) in enumerate(plugins):
        spec = runtime.registry.get(name)
        pid = instances.platform_id_of(spec, config)
        match = next(
            (i for i in existing if i.name == name and i.community_platform_id == pid), None
        )
        prepared.append(
            await instances.prepare(
                runtime,
                slug,
                spec,
                config,
                existing=match,
                loc=("body", "plugins", index, "config"),
            )
        )
    return prepared


async def _save_all(
    session: Session,
    runtime: Runtime,
    community: Community,
    prepared: Sequence[instances.Prepared],
) -> Notices:
    notices: Notices = {}
    for item in prepared:
        enabled = await instances.save(session, runtime, community, item)
        notices[enabled.instance.id] = enabled.notices
    return notices


async def create_community(
    runtime: Runtime,
    driver: Driver,
    *,
    slug: str | None,
    readable_name: str,
    plugins: PluginList,
) -> tuple[Community, Notices]:
    """Create a community with its plugins; returns it with the notices its plugins left for the
    Driver, by instance id."""
    slug = slug or str(uuid.uuid4())
    await _check_slug_free(runtime, slug)
    _check_listed(runtime, plugins)
    prepared = await _prepare_all(runtime, slug, plugins, [])
    async with runtime.unit_of_work() as session:
        community = Community(slug=slug, readable_name=readable_name, driver_id=driver.id)
        await repository.save_community(session, community)
        notices = await _save_all(session, runtime, community, prepared)
    return community, notices


async def update_community(
    runtime: Runtime,
    driver: Driver,
    current_slug: str,
    *,
    new_slug: str | None,
    readable_name: str | None,
    plugins: PluginList | None,
) -> tuple[Community, Notices]:
    """Declarative update of the Driver's community ``current_slug``: the listed plugins are
    enabled or re-configured (keeping their state and processes); enabled plugins that are not
    listed are disabled. Returns the community and the notices the listed plugins left for the
    Driver, by instance id.

    A community that does not exist yet is created as described (see :func:`put_community`)."""
    async with runtime.db.snapshot() as session:
        community = await get_community(session, driver, current_slug)
        existing = await instances.list_instances(session, community.id)
    slug = new_slug
    if slug is not None and slug != community.slug:
        await _check_slug_free(runtime, slug)
    prepared: list[instances.Prepared] = []
    if plugins is not None:
        _check_listed(runtime, plugins)
        prepared = await _prepare_all(runtime, slug or community.slug, plugins, existing)
    async with runtime.unit_of_work() as session:
        current = await repository.community_by_id(session, community.id, lock=True)
        if current is None:
            raise NotFound(f"community {community.slug!r} not found", code="unknown_community")
        if slug is not None:
            current.slug = slug
        if readable_name is not None:
            current.readable_name = readable_name
        await repository.save_community(session, current)
        notices = await _save_all(session, runtime, current, prepared)
        if plugins is not None:
            for instance in await instances.list_instances(session, current.id):
                if instance.id not in notices:
                    await instances.disable_instance(session, instance)
    return current, notices


async def put_community(
    runtime: Runtime,
    driver: Driver,
    slug: str,
    *,
    new_slug: str | None,
    readable_name: str | None,
    plugins: PluginList | None,
) -> tuple[Community, Notices, bool]:
    """``PUT`` a community: update the Driver's community ``slug`` declaratively, or create it
    when no community has that slug, so a Driver can describe its communities and let the
    gateway converge. Returns the community, its notices, and whether it was created. A slug
    another Driver holds is a 409, as on create."""
    async with runtime.db.snapshot() as session:
        mine = await repository.community_of(session, driver.id, slug)
    if mine is None:
        community, notices = await create_community(
            runtime,
            driver,
            slug=new_slug or slug,
            readable_name=readable_name or "",
            plugins=plugins or [],
        )
        return community, notices, True
    community, notices = await update_community(
        runtime, driver, slug, new_slug=new_slug, readable_name=readable_name, plugins=plugins
    )
    return community, notices, False


async def delete_community(session: Session, community: Community) -> None:
    found = await repository.community_by_id(session, community.id, lock=True)
    if found is not None:
        await repository.delete_community(session, found)


async def community_plugins(
    session: Session, community: Community, plugin: str | None = None
) -> list[PluginInstance]:
    """The community's plugin instances (of ``plugin`` only, if named), by id."""
    if plugin is not None:
        return await instances.instances_of(session, community.id, plugin)
    return await instances.list_instances(session, community.id)
