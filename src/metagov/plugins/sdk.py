"""The plugin SDK: everything a plugin author needs, and nothing else.

A plugin is a class that *declares* what it offers; the core turns the declarations into routes,
schedules and documentation. Plugin objects are stateless and shared by every community: all that
belongs to one community (its config, its stored state, a logger) arrives in the ``ctx`` argument of
every call.

    class Echo(Plugin):
        name = "echo"
        config_model = EchoConfig

        @action("say", description="Repeat the text")
        async def say(self, ctx: PluginContext[EchoConfig], params: SayParams) -> SayResult:
            return SayResult(text=params.text)

Input and output models of actions are read from the method's type hints. Governance processes are
classes (see :class:`GovernanceProcess`) listed in ``Plugin.processes``. ``docs/plugins.md`` walks
through a whole plugin.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin
from urllib.parse import parse_qs

import httpx
from pydantic import BaseModel, SecretBytes, SecretStr

from metagov.errors import PluginError, RateLimited, UpstreamError

__all__ = [
    "AuthType",
    "EventType",
    "GovernanceProcess",
    "Initiator",
    "OAuthError",
    "OAuthInstall",
    "Plugin",
    "PluginContext",
    "PluginError",
    "ProcessContext",
    "RateLimited",
    "State",
    "UpstreamError",
    "WebhookAccepted",
    "WebhookRejected",
    "WebhookReply",
    "WebhookRequest",
    "WebhookScope",
    "action",
    "task",
]

ConfigT = TypeVar("ConfigT", bound=BaseModel)
ParamsT = TypeVar("ParamsT", bound=BaseModel)
OutcomeT = TypeVar("OutcomeT", bound=BaseModel)


class AuthType(StrEnum):
    """How a community's instance authenticates to its platform."""

    NONE = "none"
    API_KEY = "api_key"
    OAUTH = "oauth"


class EmptyConfig(BaseModel):
    """Config model of plugins that need no configuration."""


@dataclass(frozen=True)
class EventType:
    """An event a plugin can send to the Driver; ``data_model`` documents its ``data``."""

    name: str
    description: str = ""
    data_model: type[BaseModel] | None = None


class State:
    """A community's persistent key/value store, for one plugin instance or one process.

    Reads and writes are in memory; the core saves the changes when the call that received this
    state returns successfully, in the same transaction as the rest of its effects. Values must be
    JSON-serializable.
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(data or {})
        self._writes: dict[str, Any] = {}
        self._deletes: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"state value for {key!r} is not JSON-serializable: {exc}") from None
        self._data[key] = value
        self._writes[key] = value
        self._deletes.discard(key)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._writes.pop(key, None)
        self._deletes.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    @property
    def changed(self) -> bool:
        return bool(self._writes or self._deletes)

    def apply_to(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Replay this call's writes onto ``stored`` (the latest saved state), so that two calls
        that touched different keys concurrently both keep their changes."""
        merged = {k: v for k, v in stored.items() if k not in self._deletes}
        merged.update(self._writes)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


@dataclass(frozen=True)
class Initiator:
    """Who caused an event on the platform."""

    user_id: str | None
    provider: str
    is_metagov_bot: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "provider": self.provider,
            "is_metagov_bot": self.is_metagov_bot,
            **self.extra,
        }


@dataclass(frozen=True)
class EmittedEvent:
    event_type: str
    data: dict[str, Any]
    initiator: dict[str, Any] | None


@dataclass
class PluginContext(Generic[ConfigT]):
    """Everything about one community's plugin instance, passed to every plugin call."""

    community: str
    plugin_name: str
    instance_id: int
    community_platform_id: str | None
    config: ConfigT
    state: State
    http: httpx.AsyncClient
    log: logging.LoggerAdapter[logging.Logger]
    settings: Any = None  # the plugin's app-wide settings (``Plugin.settings_model``)
    emitted: list[EmittedEvent] = field(default_factory=list)
    disable_reason: str | None = None

    def disable_instance(self, reason: str) -> None:
        """Ask the core to disable this instance once the call succeeds (the platform revoked
        our access); its open processes are cancelled and the Driver is told."""
        self.disable_reason = reason

    def emit_event(
        self,
        event_type: str,
        data: Mapping[str, Any],
        initiator: Initiator | Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an event for the Driver; it is stored when the current call succeeds."""
        init = initiator.to_dict() if isinstance(initiator, Initiator) else initiator
        self.emitted.append(
            EmittedEvent(event_type, dict(data), dict(init) if init is not None else None)
        )


@dataclass
class ProcessContext(PluginContext[ConfigT], Generic[ConfigT, OutcomeT]):
    """A :class:`PluginContext` plus the handle on one governance process.

    Hooks change the process through this object: ``url`` and ``closing_at`` are plain
    attributes; ``outcome`` holds the outcome recorded so far; ``set_outcome``, ``complete`` and
    ``fail`` record the result. The core applies the changes after the hook returns, through the
    one place that checks status transitions.
    """

    process_id: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    process_state: State = field(default_factory=State)
    url: str | None = None
    closing_at: datetime | None = None
    outcome: OutcomeT | None = None
    requested_status: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def set_outcome(self, outcome: OutcomeT) -> None:
        """Record the current (possibly partial) outcome, e.g. after a vote is cast."""
        self.outcome = outcome

    def complete(self, outcome: OutcomeT | None = None) -> None:
        """Mark the process completed, with its final outcome."""
        if outcome is not None:
            self.outcome = outcome
        self.requested_status = "completed"

    def fail(self, message: str, **details: Any) -> None:
        """Mark the process failed; ``message`` is shown to the Driver in ``errors``."""
        self.errors.append({"message": message, **details})
        self.requested_status = "failed"


@dataclass(frozen=True)
class OAuthInstall:
    """What an OAuth exchange yields: the platform tenant and the instance config to store
    (secrets included; the core encrypts them), plus who installed it."""

    community_platform_id: str
    config: dict[str, Any]
    installer_user_id: str | None = None


class OAuthError(Exception):
    """The install cannot go on; ``code`` and ``description`` are sent to the Driver's
    redirect URI as ``error`` and ``error_description``."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class WebhookScope(StrEnum):
    """Where a plugin's webhooks arrive.

    ``INSTANCE``: ``/api/hooks/{community}/{plugin}``, one URL per community's instance, verified
    with that instance's config. ``PLATFORM``: ``/api/hooks/{plugin}``, one URL for a platform-wide
    app, verified with the app's own credentials; the plugin names the tenant, and the core finds
    the instances with that ``community_platform_id``.
    """

    INSTANCE = "instance"
    PLATFORM = "platform"


@dataclass(frozen=True)
class WebhookRequest:
    """An inbound webhook as received: header names lower-case, the body as raw bytes."""

    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass(frozen=True)
class WebhookReply:
    """A synchronous answer the platform demands (a challenge echo, a PING reply)."""

    body: Any = None
    status_code: int = 200
    media_type: str = "application/json"


@dataclass(frozen=True)
class WebhookAccepted:
    """What ``verify_webhook`` returns for an authentic webhook.

    ``delivery_id`` is the platform's id for this delivery (redeliveries repeat it); without one,
    the body's hash de-duplicates. ``community_platform_id`` names the tenant of a platform-wide
    webhook. ``store=False`` answers with ``reply`` and stores nothing (handshakes).
    """

    delivery_id: str | None = None
    community_platform_id: str | None = None
    reply: WebhookReply | None = None
    store: bool = True


class WebhookRejected(Exception):
    """The webhook is not authentic (the gateway answers 401 and stores nothing). ``reason`` is
    a short code for logs and metrics, such as ``bad_signature`` or ``stale_timestamp``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ActionMarker:
    slug: str
    description: str
    public: bool


@dataclass(frozen=True)
class TaskMarker:
    every: timedelta


def action(
    slug: str, *, description: str = "", public: bool = False
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare a plugin method as an action served at ``/api/internal/action/{plugin}.{slug}``.

    The method is ``async def m(self, ctx, params: InputModel) -> OutputModel | None``. ``public``
    actions are also served without a Driver key at ``/api/action/{plugin}.{slug}``.
    """

    def mark(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        marker = ActionMarker(slug, description or (fn.__doc__ or "").strip(), public)
        setattr(fn, "__metagov_action__", marker)  # noqa: B010
        return fn

    return mark


def task(
    every: timedelta,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Declare a periodic task, run for every enabled instance: ``async def m(self, ctx)``."""

    def mark(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        setattr(fn, "__metagov_task__", TaskMarker(every))  # noqa: B010
        return fn

    return mark


class GovernanceProcess(Generic[ConfigT, ParamsT, OutcomeT]):
    """A long-running governance process such as a vote.

    Subclasses set ``slug``, ``params_model`` and ``outcome_model`` and implement ``start``. The
    other hooks are optional:

    - ``update`` runs every ``update_interval`` while the process is pending (polling platforms);
    - ``close`` runs when the Driver closes the process early or ``closing_at`` passes; if it does
      not call ``ctx.fail``, the process completes with its current outcome;
    - ``receive_webhook`` gets every webhook of the process's plugin instance while it is open
      (a vote cast, a button clicked); it changes the process through ``ctx`` like the others.

    A process that its platform cannot end early sets ``closable = False``.
    """

    slug: ClassVar[str]
    description: ClassVar[str] = ""
    params_model: ClassVar[type[BaseModel]]
    outcome_model: ClassVar[type[BaseModel]]
    update_interval: ClassVar[timedelta | None] = None
    closable: ClassVar[bool] = True

    async def start(self, ctx: ProcessContext[ConfigT, OutcomeT], params: ParamsT) -> None:
        raise NotImplementedError

    async def update(self, ctx: ProcessContext[ConfigT, OutcomeT]) -> None:
        return None

    async def close(self, ctx: ProcessContext[ConfigT, OutcomeT]) -> None:
        return None

    async def receive_webhook(
        self, ctx: ProcessContext[ConfigT, OutcomeT], webhook: WebhookRequest
    ) -> None:
        return None


class Plugin(Generic[ConfigT]):
    """Base class of every plugin. Subclasses declare; the core does the rest.

    - ``name``: lowercase, digits and dashes; it appears in every URL of the plugin.
    - ``config_model``: validates a community's config. Fields typed ``SecretStr`` are secrets:
      encrypted at rest and never returned by the API.
    - ``community_platform_id_field``: the config field naming the community on the platform (a
      team or installation id), which tells several instances in one community apart.
    - ``processes``: the :class:`GovernanceProcess` classes the plugin offers.
    - ``event_types``: the events it may send to the Driver.
    - methods decorated with :func:`action` and :func:`task`.
    - ``initialize(ctx)`` runs once when a community enables the plugin and again when its config
      changes; raising :class:`PluginError` there refuses the config.
    - ``webhooks``: set to a :class:`WebhookScope` to receive webhooks; then ``verify_webhook``
      checks each one before anything is stored, and ``receive_webhook`` handles it later, in a
      job (it should be idempotent: a job may run twice).
    - ``settings_model``: app-wide settings (a pydantic-settings class reading e.g.
      ``METAGOV_SLACK__*``), available as ``self.settings``; for credentials of a platform-wide
      app, not of one community.
    - ``oauth_authorize_url`` and ``oauth_exchange``: implement both to let communities install
      the plugin through ``/auth/{plugin}/authorize``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    auth_type: ClassVar[AuthType] = AuthType.NONE
    config_model: ClassVar[type[BaseModel]] = EmptyConfig
    community_platform_id_field: ClassVar[str | None] = None
    processes: ClassVar[tuple[type[GovernanceProcess[Any, Any, Any]], ...]] = ()
    event_types: ClassVar[tuple[EventType, ...]] = ()
    webhooks: ClassVar[WebhookScope | None] = None
    settings_model: ClassVar[type[BaseModel] | None] = None
    settings: Any = None  # an instance of settings_model, set by the registry

    async def initialize(self, ctx: PluginContext[ConfigT]) -> None:
        return None

    def oauth_authorize_url(self, *, kind: str, redirect_uri: str, state: str) -> str:
        """The platform's authorize URL for ``kind`` (``app`` install or ``user`` login)."""
        raise NotImplementedError

    async def oauth_exchange(
        self, *, kind: str, code: str, redirect_uri: str, http: httpx.AsyncClient
    ) -> OAuthInstall:
        """Trade the callback's ``code`` for credentials; raise :class:`OAuthError` to refuse."""
        raise NotImplementedError

    async def verify_webhook(
        self, request: WebhookRequest, config: ConfigT | None
    ) -> WebhookAccepted:
        """Check that ``request`` really comes from the platform; raise :class:`WebhookRejected`
        if not. ``config`` is the instance's config for ``INSTANCE`` webhooks, None for
        ``PLATFORM`` ones. Runs on the request path: no network calls here."""
        raise WebhookRejected("webhooks_not_supported")

    async def receive_webhook(self, ctx: PluginContext[ConfigT], webhook: WebhookRequest) -> None:
        return None


def is_secret_annotation(annotation: Any) -> bool:
    """True for ``SecretStr``/``SecretBytes`` and unions containing them (``SecretStr | None``)."""
    if annotation in (SecretStr, SecretBytes):
        return True
    if get_origin(annotation) is not None:
        return any(is_secret_annotation(arg) for arg in get_args(annotation))
    return False


def secret_fields(config_model: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        name
        for name, info in config_model.model_fields.items()
        if is_secret_annotation(info.annotation)
    )
