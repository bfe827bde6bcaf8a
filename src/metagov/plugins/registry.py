"""Finding plugins, checking their declarations, and holding what was found.

Built-in plugins are the packages under ``metagov.plugins`` that export ``plugin`` (the Plugin
class). Third-party plugins are installed packages with an entry point in the group
``metagov.plugins``. Each is checked when it loads; a broken one is refused with an error naming
the plugin and the method, and the others load anyway.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from metagov.errors import NotFound
from metagov.plugins.sdk import (
    ActionMarker,
    AuthType,
    EventType,
    GovernanceProcess,
    Plugin,
    TaskMarker,
    WebhookScope,
    secret_fields,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "metagov.plugins"
SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
RESERVED_PARAMETER_NAMES = frozenset({"callback_url"})


class PluginLoadError(Exception):
    """A plugin's declarations are wrong; the message names the plugin and what is wrong."""


@dataclass(frozen=True)
class ActionSpec:
    slug: str
    description: str
    public: bool
    input_model: type[BaseModel]
    output_model: type[BaseModel] | None
    method: Any  # the bound coroutine method


@dataclass(frozen=True)
class ProcessSpec:
    slug: str
    description: str
    params_model: type[BaseModel]
    outcome_model: type[BaseModel]
    handler: GovernanceProcess[Any, Any, Any]

    @property
    def closable(self) -> bool:
        return self.handler.closable


@dataclass(frozen=True)
class TaskSpec:
    name: str
    every_seconds: float
    method: Any


@dataclass(frozen=True)
class PluginSpec:
    """A checked plugin: its shared object and every declaration, ready for the core to use."""

    name: str
    description: str
    auth_type: AuthType
    plugin: Plugin[Any]
    config_model: type[BaseModel]
    secret_fields: frozenset[str]
    community_platform_id_field: str | None
    actions: dict[str, ActionSpec]
    processes: dict[str, ProcessSpec]
    tasks: dict[str, TaskSpec]
    event_types: tuple[EventType, ...]
    webhooks: WebhookScope | None
    oauth: bool
    refreshes_credentials: bool
    source: str

    def action(self, slug: str) -> ActionSpec:
        try:
            return self.actions[slug]
        except KeyError:
            raise NotFound(f"plugin {self.name!r} has no action {slug!r}") from None

    def process(self, slug: str) -> ProcessSpec:
        try:
            return self.processes[slug]
        except KeyError:
            raise NotFound(f"plugin {self.name!r} has no process {slug!r}") from None


@dataclass
class PluginRegistry:
    plugins: dict[str, PluginSpec] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> PluginSpec:
        try:
            return self.plugins[name]
        except KeyError:
            raise NotFound(f"unknown plugin {name!r}", code="unknown_plugin") from None

    def __iter__(self) -> typing.Iterator[PluginSpec]:
        return iter(self.plugins.values())

    def add(
        self,
        plugin_cls: type[Plugin[Any]],
        *,
        source: str = "code",
        settings: BaseModel | None = None,
    ) -> PluginSpec:
        """Check and register a plugin; ``settings`` overrides its settings from the environment."""
        spec = inspect_plugin(plugin_cls, source=source, settings=settings)
        if spec.name in self.plugins and self.plugins[spec.name].source != source:
            other = self.plugins[spec.name].source
            raise PluginLoadError(f"plugin {spec.name!r} from {source} clashes with {other}")
        self.plugins[spec.name] = spec
        return spec

    @classmethod
    def from_plugins(cls, plugin_classes: Iterable[type[Plugin[Any]]]) -> PluginRegistry:
        registry = cls()
        for plugin_cls in plugin_classes:
            registry.add(plugin_cls)
        return registry

    @classmethod
    def discover(cls, *, allow: Sequence[str] = (), block: Sequence[str] = ()) -> PluginRegistry:
        """Load built-in and installed plugins, honouring the allow and block lists.

        An empty allow list allows every plugin. Plugins that fail to load are logged and kept in
        ``failures``; they never stop the others.
        """
        registry = cls()
        for source, loader in _candidates():
            try:
                plugin_cls = loader()
                name = getattr(plugin_cls, "name", None)
                if isinstance(name, str) and not _permitted(name, allow, block):
                    log.info("plugin %s from %s is not allowed by settings", name, source)
                    continue
                registry.add(plugin_cls, source=source)
            except Exception as exc:
                log.error("plugin from %s refused: %s", source, exc)
                registry.failures[source] = str(exc)
        return registry


def _permitted(name: str, allow: Sequence[str], block: Sequence[str]) -> bool:
    return name not in block and (not allow or name in allow)


def _candidates() -> list[tuple[str, typing.Callable[[], type[Plugin[Any]]]]]:
    import metagov.plugins as builtin

    found: list[tuple[str, typing.Callable[[], type[Plugin[Any]]]]] = []
    for info in pkgutil.iter_modules(builtin.__path__):
        if not info.ispkg:
            continue
        module_name = f"{builtin.__name__}.{info.name}"

        def load_builtin(module_name: str = module_name) -> type[Plugin[Any]]:
            module = importlib.import_module(module_name)
            plugin_cls = getattr(module, "plugin", None)
            if plugin_cls is None:
                raise PluginLoadError(f"package {module_name} exports no `plugin`")
            return typing.cast(type[Plugin[Any]], plugin_cls)

        found.append((f"builtin:{info.name}", load_builtin))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"entry point {ep.name} ({ep.value})", ep.load))
    return found


def inspect_plugin(
    plugin_cls: Any, *, source: str = "code", settings: BaseModel | None = None
) -> PluginSpec:
    """Check every declaration of ``plugin_cls`` and build its :class:`PluginSpec`."""
    if not (inspect.isclass(plugin_cls) and issubclass(plugin_cls, Plugin)):
        raise PluginLoadError(f"{source}: {plugin_cls!r} is not a subclass of metagov Plugin")
    name = getattr(plugin_cls, "name", None)
    if not isinstance(name, str) or not SLUG_RE.match(name):
        raise PluginLoadError(
            f"{plugin_cls.__qualname__}: name {name!r} must be lowercase letters, digits and dashes"
        )

    def fail(what: str) -> PluginLoadError:
        return PluginLoadError(f"plugin {name!r}: {what}")

    config_model = plugin_cls.config_model
    if not _is_model(config_model):
        raise fail("config_model must be a pydantic model class")
    pid_field = plugin_cls.community_platform_id_field
    if pid_field is not None and pid_field not in config_model.model_fields:
        raise fail(f"community_platform_id_field {pid_field!r} is not a field of the config model")
    try:
        config_model.model_json_schema()
    except Exception as exc:
        raise fail(f"config_model has no JSON Schema: {exc}") from exc
    if not inspect.iscoroutinefunction(plugin_cls.initialize):
        raise fail("method 'initialize' must be async")

    instance = plugin_cls()
    if plugin_cls.settings_model is not None:
        try:
            instance.settings = settings if settings is not None else plugin_cls.settings_model()
        except Exception as exc:
            raise fail(f"its settings are invalid: {exc}") from exc
    oauth = plugin_cls.oauth_exchange is not Plugin.oauth_exchange
    if oauth and plugin_cls.oauth_authorize_url is Plugin.oauth_authorize_url:
        raise fail("implements 'oauth_exchange' but not 'oauth_authorize_url'")
    actions: dict[str, ActionSpec] = {}
    tasks: dict[str, TaskSpec] = {}
    for attr_name, member in inspect.getmembers(plugin_cls):
        marker = getattr(member, "__metagov_action__", None)
        if isinstance(marker, ActionMarker):
            spec = _inspect_action(name, attr_name, member, marker, instance)
            if spec.slug in actions:
                raise fail(f"action {spec.slug!r} is declared twice")
            actions[spec.slug] = spec
        task_marker = getattr(member, "__metagov_task__", None)
        if isinstance(task_marker, TaskMarker):
            if not inspect.iscoroutinefunction(member):
                raise fail(f"task method {attr_name!r} must be async")
            seconds = task_marker.every.total_seconds()
            if seconds <= 0:
                raise fail(f"task method {attr_name!r} needs a positive interval")
            tasks[attr_name] = TaskSpec(attr_name, seconds, getattr(instance, attr_name))

    processes: dict[str, ProcessSpec] = {}
    for process_cls in plugin_cls.processes:
        pspec = _inspect_process(name, process_cls)
        if pspec.slug in processes:
            raise fail(f"process {pspec.slug!r} is declared twice")
        processes[pspec.slug] = pspec

    webhooks = plugin_cls.webhooks
    if webhooks is not None:
        webhooks = WebhookScope(webhooks)
        if plugin_cls.verify_webhook is Plugin.verify_webhook:
            raise fail("declares webhooks but does not implement 'verify_webhook'")
    for hook in ("verify_webhook", "receive_webhook", "refresh_credentials"):
        if not inspect.iscoroutinefunction(getattr(plugin_cls, hook)):
            raise fail(f"method {hook!r} must be async")
    if inspect.iscoroutinefunction(plugin_cls.webhook_keys):
        raise fail("method 'webhook_keys' must be a plain `def`: it runs no I/O")
    if not isinstance(plugin_cls.webhook_secret_params, frozenset | set | tuple):
        raise fail("webhook_secret_params must be a set of query parameter names")

    event_types = tuple(plugin_cls.event_types)
    for event_type in event_types:
        if not isinstance(event_type, EventType):
            raise fail(f"event_types must hold EventType objects, not {event_type!r}")

    return PluginSpec(
        name=name,
        description=plugin_cls.description or (plugin_cls.__doc__ or "").strip(),
        auth_type=AuthType(plugin_cls.auth_type),
        plugin=instance,
        config_model=config_model,
        secret_fields=secret_fields(config_model),
        community_platform_id_field=pid_field,
        actions=actions,
        processes=processes,
        tasks=tasks,
        event_types=event_types,
        webhooks=webhooks,
        oauth=oauth,
        refreshes_credentials=plugin_cls.refresh_credentials is not Plugin.refresh_credentials,
        source=source,
    )


def _is_model(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, BaseModel)


def _inspect_action(
    plugin: str, attr_name: str, fn: Any, marker: ActionMarker, instance: Any
) -> ActionSpec:
    where = f"plugin {plugin!r}: action method {attr_name!r}"
    if not SLUG_RE.match(marker.slug):
        raise PluginLoadError(f"{where}: slug {marker.slug!r} must be lowercase letters and dashes")
    if not inspect.iscoroutinefunction(fn):
        raise PluginLoadError(f"{where}: must be `async def`")
    params = list(inspect.signature(fn).parameters)
    if len(params) != 3:
        raise PluginLoadError(f"{where}: signature must be (self, ctx, params)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise PluginLoadError(f"{where}: type hints cannot be resolved: {exc}") from exc
    input_model: Any = hints.get(params[2])
    if not _is_model(input_model):
        raise PluginLoadError(
            f"{where}: parameter {params[2]!r} must be typed with a pydantic model"
        )
    output = hints.get("return", type(None))
    if output is type(None):
        output_model = None
    elif _is_model(output):
        output_model = output
    else:
        raise PluginLoadError(f"{where}: return type must be a pydantic model or None")
    return ActionSpec(
        slug=marker.slug,
        description=marker.description,
        public=marker.public,
        input_model=input_model,
        output_model=output_model,
        method=getattr(instance, attr_name),
    )


# The hooks of a process and the arguments each takes (since SDK v2, every hook gets the params).
_PROCESS_HOOKS = {
    "start": ("self", "ctx", "params"),
    "update": ("self", "ctx", "params"),
    "close": ("self", "ctx", "params"),
    "receive_webhook": ("self", "ctx", "params", "webhook"),
}


def _inspect_process(plugin: str, process_cls: Any) -> ProcessSpec:
    label = getattr(process_cls, "__qualname__", repr(process_cls))
    where = f"plugin {plugin!r}: process {label}"
    if not (inspect.isclass(process_cls) and issubclass(process_cls, GovernanceProcess)):
        raise PluginLoadError(f"{where}: must subclass GovernanceProcess")
    slug = getattr(process_cls, "slug", None)
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise PluginLoadError(f"{where}: slug {slug!r} must be lowercase letters and dashes")
    for attr in ("params_model", "outcome_model"):
        if not _is_model(getattr(process_cls, attr, None)):
            raise PluginLoadError(f"{where}: {attr} must be a pydantic model class")
    clash = RESERVED_PARAMETER_NAMES & set(process_cls.params_model.model_fields)
    if clash:
        raise PluginLoadError(f"{where}: parameter names {sorted(clash)} are reserved")
    if process_cls.start is GovernanceProcess.start:
        raise PluginLoadError(f"{where}: method 'start' is not implemented")
    for hook, arguments in _PROCESS_HOOKS.items():
        method = getattr(process_cls, hook)
        if not inspect.iscoroutinefunction(method):
            raise PluginLoadError(f"{where}: method {hook!r} must be async")
        if len(inspect.signature(method).parameters) != len(arguments):
            raise PluginLoadError(f"{where}: method {hook!r} must take ({', '.join(arguments)})")
    interval = process_cls.update_interval
    if interval is not None and interval.total_seconds() <= 0:
        raise PluginLoadError(f"{where}: update_interval must be positive")
    return ProcessSpec(
        slug=slug,
        description=process_cls.description or (process_cls.__doc__ or "").strip(),
        params_model=process_cls.params_model,
        outcome_model=process_cls.outcome_model,
        handler=process_cls(),
    )
