"""Plugin instances: their config and secrets, the context every plugin call gets, running a call
and saving what it did, enabling, re-configuring and disabling them, and actions.

A plugin call (an action, ``initialize``, a periodic task, a webhook) runs on a snapshot of its
instance with no transaction open; what it recorded on its context is saved afterwards by
:func:`save_effects`, in the caller's short transaction, with the instance's row locked so that
calls racing on one instance keep each other's state writes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_core import PydanticUndefined

from metagov import tracing
from metagov.crypto import SecretBox
from metagov.db.base import utcnow
from metagov.db.engine import Session
from metagov.db.models import Community, PluginInstance, ProcessStatus
from metagov.errors import AmbiguousPlugin, Conflict, FieldError, InvalidInput, NotFound
from metagov.instances import repository
from metagov.outbox import service as outbox
from metagov.plugins.registry import ActionSpec, PluginSpec
from metagov.plugins.sdk import (
    CredentialsRejected,
    EmittedEvent,
    PluginContext,
    State,
    WebhookScope,
)
from metagov.processes import lifecycle
from metagov.processes import repository as processes
from metagov.runtime import Runtime

log = logging.getLogger("metagov.plugins")
T = TypeVar("T")


class PluginContractError(Exception):
    """A plugin returned something its own declarations do not allow (a plugin bug)."""


# --- config and secrets -------------------------------------------------------------------------


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
        if value is not None and not pid.strip():
            # The platform id names the instance (in hook URLs, in ``?community_platform_id=``);
            # a blank one would stand for "no platform id" and clash with every other.
            raise InvalidInput(
                [
                    FieldError(
                        loc=[*loc, spec.community_platform_id_field],
                        msg="must not be empty: it names the instance",
                        type="string_too_short",
                    )
                ]
            )
    return ValidatedConfig(model, public, secrets, pid)


def platform_id_of(spec: PluginSpec, raw: Mapping[str, Any]) -> str:
    """The platform id a config names, to find its instance: as the config model makes it
    (defaults filled, values normalised); for a config that does not validate on its own (its
    secrets left out, to keep the stored ones), the field as given, or its default."""
    name = spec.community_platform_id_field
    if not name:
        return ""
    try:
        return validate_config(spec, raw).community_platform_id
    except InvalidInput:
        pass
    if name in raw:
        value = raw[name]
    else:
        value = spec.config_model.model_fields[name].get_default(call_default_factory=False)
    return "" if value is None or value is PydanticUndefined else str(_reveal(value))


def platform_tenant_of(spec: PluginSpec, community_platform_id: str) -> str | None:
    """The platform tenant an instance with this platform id claims: its platform id, for a
    plugin whose webhooks are platform-wide (they are routed to the instance by it); None for
    any other plugin."""
    if spec.webhooks is WebhookScope.PLATFORM and community_platform_id:
        return community_platform_id
    return None


async def check_tenant_free(
    session: Session, spec: PluginSpec, community_platform_id: str, instance_id: int | None
) -> None:
    """409 ``platform_tenant_taken`` if another instance holds the tenant this platform id
    names. Checked before a platform is called and again, under the unique constraint, when the
    instance is saved."""
    tenant = platform_tenant_of(spec, community_platform_id)
    if tenant is None:
        return
    owner = await repository.tenant_owner(session, spec.name, tenant)
    if owner is not None and owner != instance_id:
        raise repository.tenant_taken(spec.name, tenant)


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, SecretBytes):
        return value.get_secret_value().decode()
    return value


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


def stored_secrets(box: SecretBox, instance: InstanceLike) -> dict[str, Any]:
    return box.decrypt(instance.secrets) if instance.secrets else {}


def secrets_set(runtime: Runtime, instance: PluginInstance) -> list[str]:
    """Names of the secret fields that hold a value (the values themselves are never shown)."""
    return sorted(k for k, v in stored_secrets(runtime.secrets, instance).items() if v is not None)


def load_config(runtime: Runtime, spec: PluginSpec, instance: InstanceLike) -> BaseModel:
    """The instance's config as the plugin's model, secrets decrypted.

    Decrypting and validating on every webhook and action is most of their cost, so the result is
    kept per process, keyed by the instance, its ``config_version`` (every config change moves
    it, a state write does not) and its ciphertext (key rotation changes that). Plugins get the
    same object each call, so each call gets a shallow copy.
    """
    key = (instance.id, instance.config_version, instance.secrets)
    cache = runtime.caches.configs
    found = cache.get(key)
    if found is None:
        found = spec.config_model.model_validate(
            {**instance.config, **stored_secrets(runtime.secrets, instance)}
        )
        cache.put(key, found)
    return found.model_copy()


def choose_instance(
    found: Sequence[_Instance],
    slug: str,
    name: str,
    community_platform_id: str | None,
    *,
    anonymous: bool = False,
) -> _Instance:
    """The one instance among ``found`` (a community's instances of plugin ``name``, by id) that
    a request means: 404 if none, 409 listing the choices if several. An ``anonymous`` caller
    (a public route, a platform's webhook) is told how to choose but not the instances' ids,
    which only their Driver may see."""
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
        if anonymous:
            raise AmbiguousPlugin(
                f"plugin {name!r} has several instances in community {slug!r}; "
                "pick one with the community_platform_id query parameter",
                choices=None,
            )
        raise AmbiguousPlugin(
            f"community {slug!r} has {len(found)} instances of plugin {name!r}; "
            "pick one with the community_platform_id query parameter",
            choices=[
                {"id": inst.id, "community_platform_id": inst.community_platform_id}
                for inst in found
            ],
        )
    return found[0]


def ensure_active(instance: InstanceLike, name: str) -> None:
    """Refuse to act through an instance the platform has suspended."""
    if instance.suspended_at is not None:
        raise Conflict(
            f"plugin {name!r} is suspended on its platform; it resumes when the platform "
            "gives access back",
            code="plugin_suspended",
        )


# --- plugin calls -------------------------------------------------------------------------------


def build_context(
    runtime: Runtime,
    spec: PluginSpec,
    community_slug: str,
    instance: PluginInstance,
    config: BaseModel | None = None,
) -> PluginContext[Any]:
    """The context of one call on ``instance`` (a snapshot: nothing in it is saved until the call
    returns, by :func:`save_effects`)."""
    return PluginContext(
        community=community_slug,
        plugin_name=spec.name,
        instance_id=instance.id or 0,
        community_platform_id=instance.community_platform_id or None,
        config=config if config is not None else load_config(runtime, spec, instance),
        state=State(instance.state),
        http=runtime.outbound if spec.plugin.calls_configured_urls else runtime.http,
        settings=spec.plugin.settings,
        base_url=runtime.settings.base_url,
        secret_fields=spec.secret_fields,
        credentials_expire_at=instance.credentials_expire_at,
        log=logging.LoggerAdapter(
            log.getChild(spec.name),
            {"community": community_slug, "plugin_instance": instance.id},
        ),
    )


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
    session: Session, runtime: Runtime, instance: PluginInstance, ctx: PluginContext[Any]
) -> bool:
    """Persist what a plugin call did: its state changes, refreshed credentials, the events it
    emitted, a suspension, and a request to disable the instance. Returns whether the instance
    was disabled.

    A call without effects costs no statement. Otherwise the instance's row is locked and its
    state re-read, and the call's writes are replayed onto it, so that two calls that touched
    different keys concurrently both keep their changes.
    """
    if not has_effects(ctx):
        return False
    if ctx.state.changed or ctx.secret_update is not None or ctx.disable_reason is not None:
        instance = await repository.lock(session, instance)
    if ctx.state.changed:
        instance.state = ctx.state.apply_to(instance.state)
        instance.state_version += 1
    if ctx.secret_update is not None:
        stored = stored_secrets(runtime.secrets, instance)
        stored.update(ctx.secret_update.values)
        instance.secrets = runtime.secrets.encrypt(stored)
        instance.credentials_expire_at = ctx.secret_update.expires_at
        instance.config_version += 1
        ctx.secret_update = None
    await record_emitted(session, instance, ctx.emitted)
    ctx.emitted.clear()
    if ctx.suspension is not None:
        if instance not in session:
            instance = await repository.lock(session, instance)
        await _suspend_or_resume(session, instance, ctx.plugin_name, *ctx.suspension)
        ctx.suspension = None
    if ctx.disable_reason is None:
        return False
    await outbox.record_event(
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


async def record_emitted(
    session: Session, instance: PluginInstance, emitted: Sequence[EmittedEvent]
) -> None:
    """Record the events a call on ``instance`` emitted, in order."""
    for event in emitted:
        await outbox.record_event(
            session,
            instance.community_id,
            source=instance.name,
            event_type=event.event_type,
            data=event.data,
            initiator=event.initiator,
        )


def _instance_data(instance: PluginInstance, plugin: str) -> dict[str, Any]:
    return {
        "plugin": plugin,
        "id": instance.id,
        "community_platform_id": instance.community_platform_id or None,
    }


async def _suspend_or_resume(
    session: Session, instance: PluginInstance, plugin: str, suspend: bool, reason: str
) -> None:
    """Suspend or resume ``instance``; the Driver hears of it only when it changes."""
    if suspend == (instance.suspended_at is not None):
        return
    instance.suspended_at = utcnow() if suspend else None
    instance.suspend_reason = reason if suspend else None
    data = _instance_data(instance, plugin)
    if suspend:
        data.update(suspended=True, reason=reason)
    await outbox.record_event(
        session,
        instance.community_id,
        source=plugin,
        event_type="plugin.disabled" if suspend else "plugin.enabled",
        data=data,
    )


# --- actions ------------------------------------------------------------------------------------


async def perform_action(
    runtime: Runtime,
    community_slug: str,
    instance: PluginInstance,
    spec: PluginSpec,
    action: ActionSpec,
    params: BaseModel,
) -> BaseModel | None:
    """Run ``action`` on the instance the route chose, then save its effects (if any) in one
    short transaction: nothing is held open while the plugin talks to its platform."""
    ensure_active(instance, spec.name)
    ctx = build_context(runtime, spec, community_slug, instance)
    attributes = {"metagov.community": community_slug, "metagov.plugin_instance": instance.id}
    with tracing.span(f"action {spec.name}.{action.slug}", attributes=attributes):
        result = await call_plugin(spec, ctx, lambda: action.method(ctx, params))
    if has_effects(ctx):
        async with runtime.unit_of_work() as session:
            await save_effects(session, runtime, instance, ctx)
    if action.output_model is None:
        return None
    try:
        if isinstance(result, action.output_model):
            return result
        output: BaseModel = action.output_model.model_validate(result)
        return output
    except ValidationError as exc:
        raise PluginContractError(
            f"action {spec.name}.{action.slug} returned a result that breaks its output "
            f"model: {exc}"
        ) from exc


# --- enabling, re-configuring, disabling --------------------------------------------------------


@dataclass(frozen=True)
class Enabled:
    """An instance enabled or re-configured, whether it is new, and what its plugin asked to
    show the Driver this once (``PluginContext.tell_driver``)."""

    instance: PluginInstance
    created: bool
    notices: dict[str, Any]


@dataclass
class Prepared:
    """A config validated and its ``initialize`` run, ready to be saved: for a new instance, or
    for ``existing`` as it was read (its ``config_version`` guards the save)."""

    spec: PluginSpec
    validated: ValidatedConfig
    ctx: PluginContext[Any]
    existing: PluginInstance | None
    credentials_expire_at: datetime | None = None
    notices: dict[str, Any] = field(default_factory=dict)


async def prepare(
    runtime: Runtime,
    community_slug: str,
    spec: PluginSpec,
    raw_config: Mapping[str, Any],
    *,
    existing: PluginInstance | None,
    loc: Sequence[str | int] = ("body",),
    credentials_expire_at: datetime | None = None,
) -> Prepared:
    """Validate a config for a new instance (or for ``existing``, whose stored secrets fill the
    ones left out) and run the plugin's ``initialize`` on it. No transaction is open: the
    plugin may check the config against its platform. Nothing is saved yet (see :func:`save`)."""
    stored = stored_secrets(runtime.secrets, existing) if existing is not None else None
    validated = validate_config(spec, raw_config, stored_secrets=stored, loc=loc)
    async with runtime.db.snapshot() as session:
        await check_tenant_free(
            session, spec, validated.community_platform_id, existing.id if existing else None
        )
    draft = PluginInstance(
        id=existing.id if existing is not None else None,
        community_id=existing.community_id if existing is not None else 0,
        name=spec.name,
        community_platform_id=validated.community_platform_id,
        config=validated.public,
        state=dict(existing.state) if existing is not None else {},
        credentials_expire_at=credentials_expire_at
        or (existing.credentials_expire_at if existing is not None else None),
    )
    ctx = build_context(runtime, spec, community_slug, draft, validated.model)
    await call_plugin(spec, ctx, lambda: spec.plugin.initialize(ctx))
    return Prepared(spec, validated, ctx, existing, credentials_expire_at, dict(ctx.notices))


async def save(
    session: Session, runtime: Runtime, community: Community, prepared: Prepared
) -> Enabled:
    """Store a prepared config: insert the new instance, or update the existing one if nobody
    changed its config since it was read (409 otherwise); then save what ``initialize`` did."""
    validated = prepared.validated
    secrets = runtime.secrets.encrypt(validated.secrets) if validated.secrets else None
    tenant = platform_tenant_of(prepared.spec, validated.community_platform_id)
    existing_id = prepared.existing.id if prepared.existing is not None else None
    await check_tenant_free(session, prepared.spec, validated.community_platform_id, existing_id)
    if prepared.existing is None:
        instance = PluginInstance(
            community_id=community.id,
            name=prepared.spec.name,
            community_platform_id=validated.community_platform_id,
            platform_tenant=tenant,
            config=validated.public,
            secrets=secrets,
            state={},
            credentials_expire_at=prepared.credentials_expire_at,
        )
        await repository.add(session, instance)
        created = True
    else:
        found = await repository.get(
            session, community.id, prepared.spec.name, prepared.existing.id, lock=True
        )
        if found is None or found.config_version != prepared.existing.config_version:
            raise Conflict(
                f"the {prepared.spec.name!r} instance changed while it was being re-configured; "
                "send the request again",
                code="instance_changed",
            )
        instance = found
        if validated.community_platform_id != instance.community_platform_id:
            clash = await repository.by_platform_id(
                session, community.id, prepared.spec.name, validated.community_platform_id
            )
            if clash is not None:
                raise Conflict(
                    f"another instance of {prepared.spec.name!r} already has "
                    f"community_platform_id {validated.community_platform_id!r}"
                )
        instance.config = validated.public
        instance.secrets = secrets
        instance.community_platform_id = validated.community_platform_id
        instance.platform_tenant = tenant
        instance.config_version += 1
        instance.updated_at = utcnow()
        if prepared.credentials_expire_at is not None:
            instance.credentials_expire_at = prepared.credentials_expire_at
        await repository.save_changes(session, instance)
        created = False
    await save_effects(session, runtime, instance, prepared.ctx)
    return Enabled(instance, created, prepared.notices)


async def enable_plugin(
    runtime: Runtime,
    community: Community,
    spec: PluginSpec,
    raw_config: Mapping[str, Any],
    *,
    loc: Sequence[str | int] = ("body",),
    credentials_expire_at: datetime | None = None,
) -> Enabled:
    """Enable ``spec`` in ``community``, or re-configure the instance with the same platform id
    (secrets left out of ``raw_config`` then keep their stored value): read, ``initialize`` with
    nothing open, then save in one short transaction. ``credentials_expire_at`` is when the
    secrets given expire (an OAuth grant's access token)."""
    async with runtime.db.snapshot() as session:
        existing = await repository.by_platform_id(
            session, community.id, spec.name, platform_id_of(spec, raw_config)
        )
    prepared = await prepare(
        runtime,
        community.slug,
        spec,
        raw_config,
        existing=existing,
        loc=loc,
        credentials_expire_at=credentials_expire_at,
    )
    async with runtime.unit_of_work() as session:
        return await save(session, runtime, community, prepared)


async def reconfigure_instance(
    runtime: Runtime,
    community: Community,
    spec: PluginSpec,
    instance_id: int,
    raw_config: Mapping[str, Any],
) -> Enabled:
    """Change an instance's config in place, keeping its state and its running processes."""
    async with runtime.db.snapshot() as session:
        existing = await get_instance(session, community, spec.name, instance_id)
    prepared = await prepare(runtime, community.slug, spec, raw_config, existing=existing)
    async with runtime.unit_of_work() as session:
        return await save(session, runtime, community, prepared)


async def get_instance(
    session: Session, community: Community, name: str, instance_id: int
) -> PluginInstance:
    instance = await repository.get(session, community.id, name, instance_id)
    if instance is None:
        raise NotFound(f"plugin {name!r} has no instance {instance_id} in this community")
    return instance


async def list_instances(session: Session, community_id: int) -> list[PluginInstance]:
    return await repository.all_of_community(session, community_id)


async def instances_of(session: Session, community_id: int, name: str) -> list[PluginInstance]:
    return await repository.instances_of(session, community_id, name)


async def disable_instance(session: Session, instance: PluginInstance) -> None:
    """Remove an instance. Its processes that are still open are cancelled, not silently lost
    (a hook running on one of them then finds its lease gone and saves nothing)."""
    community = await session.get_one(Community, instance.community_id)
    for process in await processes.open_of_instance(session, instance.id):
        lifecycle.transition(process, ProcessStatus.CANCELLED)
        process.errors = [*process.errors, {"message": "the plugin was disabled"}]
        process.lease_until = None
        process.version += 1
        await outbox.record_process_event(session, community.slug, process)
    await repository.remove(session, instance)


async def disable_by_id(
    session: Session, community: Community, name: str, instance_id: int
) -> None:
    found = await repository.get(session, community.id, name, instance_id, lock=True)
    if found is None:
        raise NotFound(f"plugin {name!r} has no instance {instance_id} in this community")
    await disable_instance(session, found)


async def rotate_secrets(session: Session, box: SecretBox) -> int:
    """Re-encrypt everything encrypted at rest (plugin secrets and Drivers' signing secrets)
    under the newest key; returns how many rows were."""
    count = 0
    for instance in await repository.with_secrets(session):
        if instance.secrets is not None:
            instance.secrets = box.rotate(instance.secrets)
            count += 1
    for driver in await repository.all_drivers(session):
        if driver.webhook_secret:
            driver.webhook_secret = box.rotate(driver.webhook_secret)
        if driver.previous_webhook_secret:
            driver.previous_webhook_secret = box.rotate(driver.previous_webhook_secret)
        count += 1
    await session.flush()
    return count
