"""Plugin instances: enabling, re-configuring and disabling them, and building the context that
every plugin call receives."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.crypto import SecretBox
from metagov.db.base import utcnow
from metagov.db.models import Community, Driver, PluginInstance, Process
from metagov.errors import AmbiguousPlugin, Conflict, InvalidInput, NotFound
from metagov.plugins.registry import PluginSpec
from metagov.plugins.sdk import CredentialsRejected, PluginContext, State
from metagov.runtime import Runtime
from metagov.services import events, lifecycle

log = logging.getLogger("metagov.plugins")


@dataclass(frozen=True)
class ValidatedConfig:
    """A config that passed the plugin's model, split into what may be shown and what may not."""

    model: BaseModel
    public: dict[str, Any]
    secrets: dict[str, Any]
    community_platform_id: str


def validate_config(
    spec: PluginSpec,
    raw: Mapping[str, Any],
    *,
    stored_secrets: Mapping[str, Any] | None = None,
    loc: Sequence[str | int] = ("body",),
) -> ValidatedConfig:
    """Validate ``raw`` with the plugin's config model.

    Secret fields left out of ``raw`` keep their ``stored_secrets`` value, so a Driver can change
    a plain setting without sending the API token again.
    """
    data = dict(raw)
    for name, value in (stored_secrets or {}).items():
        data.setdefault(name, value)
    try:
        model = spec.config_model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput.from_pydantic(exc, prefix=loc) from None
    public = model.model_dump(mode="json", exclude=set(spec.secret_fields))
    secrets = {name: _reveal(getattr(model, name)) for name in spec.secret_fields}
    pid = ""
    if spec.community_platform_id_field:
        value = getattr(model, spec.community_platform_id_field)
        pid = "" if value is None else str(_reveal(value))
    return ValidatedConfig(model, public, secrets, pid)


def _platform_id_of(spec: PluginSpec, raw: Mapping[str, Any]) -> str:
    """The platform id a raw (not yet validated) config names, to find its instance."""
    if not spec.community_platform_id_field:
        return ""
    value = raw.get(spec.community_platform_id_field)
    return "" if value is None else str(_reveal(value))


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, SecretBytes):
        return value.get_secret_value().decode()
    return value


def secrets_set(runtime: Runtime, instance: PluginInstance) -> list[str]:
    """Names of the secret fields that hold a value (the values themselves are never shown)."""
    return sorted(k for k, v in stored_secrets(runtime, instance).items() if v is not None)


def stored_secrets(runtime: Runtime, instance: InstanceLike) -> dict[str, Any]:
    return runtime.secrets.decrypt(instance.secrets) if instance.secrets else {}


def load_config(runtime: Runtime, spec: PluginSpec, instance: InstanceLike) -> BaseModel:
    """The instance's config as the plugin's model, secrets decrypted.

    Decrypting and validating on every webhook and action is most of their cost, so the result is
    kept per process, keyed by the instance, its ``config_version`` (every config change moves
    it, a state write does not) and its ciphertext (key rotation changes that). Plugins get the
    same object each call, so each call gets a shallow copy.
    """
    key = (instance.id, instance.config_version, instance.secrets)
    found = runtime.config_cache.get(key)
    if found is None:
        found = spec.config_model.model_validate(
            {**instance.config, **stored_secrets(runtime, instance)}
        )
        runtime.config_cache.put(key, found)
    return found.model_copy()


def build_context(
    runtime: Runtime,
    spec: PluginSpec,
    community: Community,
    instance: PluginInstance,
    config: BaseModel | None = None,
) -> PluginContext[Any]:
    return PluginContext(
        community=community.slug,
        plugin_name=spec.name,
        instance_id=instance.id,
        community_platform_id=instance.community_platform_id or None,
        config=config if config is not None else load_config(runtime, spec, instance),
        state=State(instance.state),
        http=runtime.http,
        settings=spec.plugin.settings,
        base_url=runtime.settings.base_url,
        secret_fields=spec.secret_fields,
        credentials_expire_at=instance.credentials_expire_at,
        log=logging.LoggerAdapter(
            log.getChild(spec.name),
            {"community": community.slug, "plugin_instance": instance.id},
        ),
    )


def has_effects(ctx: PluginContext[Any]) -> bool:
    """Whether a call recorded anything to save."""
    return bool(
        ctx.state.changed
        or ctx.emitted
        or ctx.disable_reason is not None
        or ctx.secret_update is not None
        or ctx.suspension is not None
    )


async def save_effects(
    session: AsyncSession, runtime: Runtime, instance: PluginInstance, ctx: PluginContext[Any]
) -> bool:
    """Persist what a plugin call did: its state changes, refreshed credentials, the events it
    emitted, a suspension, and a request to disable the instance. Returns whether the instance
    was disabled.

    The instance may have been read outside ``session`` (an action's lookup is): it joins the
    session only when there is something to save, so a call without effects costs no statement.
    """
    if not has_effects(ctx):
        return False
    if instance not in session:
        instance = await session.merge(instance, load=False)
    if ctx.state.changed or ctx.secret_update is not None:
        # Re-read under a row lock so that concurrent calls touching other keys keep theirs.
        await session.refresh(instance, ["state", "secrets"], with_for_update=True)
    if ctx.state.changed:
        instance.state = ctx.state.apply_to(instance.state)
        instance.state_version += 1
    if ctx.secret_update is not None:
        stored = stored_secrets(runtime, instance)
        stored.update(ctx.secret_update.values)
        instance.secrets = runtime.secrets.encrypt(stored)
        instance.credentials_expire_at = ctx.secret_update.expires_at
        instance.config_version += 1
        ctx.secret_update = None
    for emitted in ctx.emitted:
        await events.record_event(
            session,
            instance.community_id,
            source=ctx.plugin_name,
            event_type=emitted.event_type,
            data=emitted.data,
            initiator=emitted.initiator,
        )
    ctx.emitted.clear()
    if ctx.suspension is not None:
        await _suspend_or_resume(session, instance, ctx, *ctx.suspension)
        ctx.suspension = None
    if ctx.disable_reason is None:
        return False
    await events.record_event(
        session,
        instance.community_id,
        source=ctx.plugin_name,
        event_type="plugin.disabled",
        data={
            "plugin": ctx.plugin_name,
            "id": instance.id,
            "community_platform_id": instance.community_platform_id or None,
            "reason": ctx.disable_reason,
        },
    )
    await disable_instance(session, instance)
    return True


async def _suspend_or_resume(
    session: AsyncSession,
    instance: PluginInstance,
    ctx: PluginContext[Any],
    suspend: bool,
    reason: str,
) -> None:
    """Suspend or resume ``instance``; the Driver hears of it only when it changes."""
    if suspend == (instance.suspended_at is not None):
        return
    instance.suspended_at = utcnow() if suspend else None
    instance.suspend_reason = reason if suspend else None
    data: dict[str, Any] = {
        "plugin": ctx.plugin_name,
        "id": instance.id,
        "community_platform_id": instance.community_platform_id or None,
    }
    if suspend:
        data.update(suspended=True, reason=reason)
    await events.record_event(
        session,
        instance.community_id,
        source=ctx.plugin_name,
        event_type="plugin.disabled" if suspend else "plugin.enabled",
        data=data,
    )


T = TypeVar("T")


async def call_plugin(
    spec: PluginSpec, ctx: PluginContext[Any], call: Callable[[], Awaitable[T]]
) -> T:
    """Run one plugin call with fresh credentials: refreshed first if they expire within the
    plugin's margin, and refreshed once more and the call retried if the platform rejects them.

    A retried call starts over; events it emitted before the rejection are dropped, so that the
    retry does not emit them twice.
    """
    if spec.refreshes_credentials:
        expires = ctx.credentials_expire_at
        if expires is not None and expires <= utcnow() + spec.plugin.credentials_refresh_margin:
            await spec.plugin.refresh_credentials(ctx)
    emitted = len(ctx.emitted)
    try:
        return await call()
    except CredentialsRejected:
        if not spec.refreshes_credentials:
            raise
        ctx.log.info("credentials rejected by the platform; refreshing them once")
        del ctx.emitted[emitted:]
        await spec.plugin.refresh_credentials(ctx)
        return await call()


def ensure_active(instance: InstanceLike, name: str) -> None:
    """Refuse to act through an instance the platform has suspended."""
    if instance.suspended_at is not None:
        raise Conflict(
            f"plugin {name!r} is suspended on its platform; it resumes when the platform "
            "gives access back",
            code="plugin_suspended",
        )


async def list_instances(session: AsyncSession, community: Community) -> Sequence[PluginInstance]:
    return (
        await session.scalars(
            select(PluginInstance)
            .where(PluginInstance.community_id == community.id)
            .order_by(PluginInstance.id)
        )
    ).all()


async def get_instance(
    session: AsyncSession, community: Community, name: str, instance_id: int
) -> PluginInstance:
    instance = await session.scalar(
        select(PluginInstance).where(
            PluginInstance.id == instance_id,
            PluginInstance.community_id == community.id,
            PluginInstance.name == name,
        )
    )
    if instance is None:
        raise NotFound(f"plugin {name!r} has no instance {instance_id} in this community")
    return instance


# Built once: it runs on every action and process call.
_INSTANCES_OF = (
    select(PluginInstance)
    .where(
        PluginInstance.community_id == bindparam("community_id"),
        PluginInstance.name == bindparam("name"),
    )
    .order_by(PluginInstance.id)
)


async def resolve_instance(
    session: AsyncSession,
    community: Community,
    name: str,
    community_platform_id: str | None = None,
) -> PluginInstance:
    """The one instance of plugin ``name`` a request means; 409 with the choices if ambiguous."""
    params = {"community_id": community.id, "name": name}
    found = (await session.scalars(_INSTANCES_OF, params)).all()
    return choose_instance(found, community.slug, name, community_platform_id)


class InstanceLike(Protocol):
    """What choosing an instance and loading its config read: an ORM row or a Core row."""

    @property
    def id(self) -> int: ...

    @property
    def community_platform_id(self) -> str: ...

    @property
    def config(self) -> dict[str, Any]: ...

    @property
    def secrets(self) -> str | None: ...

    @property
    def config_version(self) -> int: ...

    @property
    def suspended_at(self) -> datetime | None: ...


_Instance = TypeVar("_Instance", bound=InstanceLike)


def choose_instance(
    found: Sequence[_Instance], slug: str, name: str, community_platform_id: str | None
) -> _Instance:
    """The one instance among ``found`` (a community's instances of plugin ``name``, by id) that
    a request means: 404 if none, 409 listing the choices if several."""
    if community_platform_id is not None:
        found = [i for i in found if i.community_platform_id == community_platform_id]
    if not found:
        which = (
            f" with community_platform_id {community_platform_id!r}"
            if community_platform_id
            else ""
        )
        raise NotFound(
            f"plugin {name!r} is not enabled{which} in community {slug!r}",
            code="plugin_not_enabled",
        )
    if len(found) > 1:
        raise AmbiguousPlugin(
            f"community {slug!r} has {len(found)} instances of plugin {name!r}; "
            "pick one with the community_platform_id query parameter",
            choices=[
                {"id": inst.id, "community_platform_id": inst.community_platform_id}
                for inst in found
            ],
        )
    return found[0]


@dataclass(frozen=True)
class Enabled:
    """An instance enabled or re-configured, whether it is new, and what its plugin asked to
    show the Driver this once (``PluginContext.tell_driver``)."""

    instance: PluginInstance
    created: bool
    notices: dict[str, Any]


async def enable_plugin(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    spec: PluginSpec,
    raw_config: Mapping[str, Any],
    *,
    loc: Sequence[str | int] = ("body",),
    credentials_expire_at: datetime | None = None,
) -> Enabled:
    """Enable ``spec`` in ``community``, or re-configure the instance with the same platform id
    (secrets left out of ``raw_config`` then keep their stored value). ``credentials_expire_at``
    is when the secrets given expire (an OAuth grant's access token)."""
    existing = await session.scalar(
        select(PluginInstance).where(
            PluginInstance.community_id == community.id,
            PluginInstance.name == spec.name,
            PluginInstance.community_platform_id == _platform_id_of(spec, raw_config),
        )
    )
    if existing is not None:
        existing.credentials_expire_at = credentials_expire_at
        notices = await reconfigure_instance(
            session, runtime, community, spec, existing, raw_config, loc=loc
        )
        return Enabled(existing, False, notices)
    candidate = validate_config(spec, raw_config, loc=loc)
    instance = PluginInstance(
        community_id=community.id,
        name=spec.name,
        community_platform_id=candidate.community_platform_id,
        config=candidate.public,
        secrets=runtime.secrets.encrypt(candidate.secrets) if candidate.secrets else None,
        state={},
        credentials_expire_at=credentials_expire_at,
    )
    session.add(instance)
    await session.flush()
    notices = await _initialize(session, runtime, spec, community, instance, candidate.model)
    return Enabled(instance, True, notices)


async def reconfigure_instance(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    spec: PluginSpec,
    instance: PluginInstance,
    raw_config: Mapping[str, Any],
    *,
    loc: Sequence[str | int] = ("body",),
) -> dict[str, Any]:
    """Change an instance's config in place, keeping its state and its running processes;
    returns the notices its plugin's ``initialize`` left for the Driver."""
    validated = validate_config(
        spec, raw_config, stored_secrets=stored_secrets(runtime, instance), loc=loc
    )
    if validated.community_platform_id != instance.community_platform_id:
        clash = await session.scalar(
            select(PluginInstance.id).where(
                PluginInstance.community_id == community.id,
                PluginInstance.name == spec.name,
                PluginInstance.community_platform_id == validated.community_platform_id,
                PluginInstance.id != instance.id,
            )
        )
        if clash is not None:
            raise Conflict(
                f"another instance of {spec.name!r} already has community_platform_id "
                f"{validated.community_platform_id!r}"
            )
    instance.config = validated.public
    instance.secrets = runtime.secrets.encrypt(validated.secrets) if validated.secrets else None
    instance.community_platform_id = validated.community_platform_id
    instance.config_version += 1
    instance.updated_at = utcnow()
    await session.flush()
    return await _initialize(session, runtime, spec, community, instance, validated.model)


async def _initialize(
    session: AsyncSession,
    runtime: Runtime,
    spec: PluginSpec,
    community: Community,
    instance: PluginInstance,
    config: BaseModel,
) -> dict[str, Any]:
    ctx = build_context(runtime, spec, community, instance, config)
    await call_plugin(spec, ctx, lambda: spec.plugin.initialize(ctx))
    await save_effects(session, runtime, instance, ctx)
    return ctx.notices


async def disable_instance(session: AsyncSession, instance: PluginInstance) -> None:
    """Remove an instance. Its processes that are still open are cancelled, not silently lost."""
    open_processes = await session.scalars(
        select(Process).where(
            Process.plugin_instance_id == instance.id,
            Process.status.in_(lifecycle.OPEN_STATUSES),
        )
    )
    community = await session.get_one(Community, instance.community_id)
    for process in open_processes:
        lifecycle.transition(process, lifecycle.ProcessStatus.CANCELLED)
        process.errors = [*process.errors, {"message": "the plugin was disabled"}]
        await events.record_process_event(session, community, process)
    await session.delete(instance)
    await session.flush()


async def rotate_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Re-encrypt everything encrypted at rest (plugin secrets and Drivers' signing secrets)
    under the newest key; returns how many rows were."""
    count = 0
    for instance in await session.scalars(
        select(PluginInstance).where(PluginInstance.secrets.is_not(None))
    ):
        if instance.secrets is not None:
            instance.secrets = box.rotate(instance.secrets)
            count += 1
    for driver in await session.scalars(select(Driver)):
        if driver.webhook_secret:
            driver.webhook_secret = box.rotate(driver.webhook_secret)
        if driver.previous_webhook_secret:
            driver.previous_webhook_secret = box.rotate(driver.previous_webhook_secret)
        count += 1
    await session.flush()
    return count
