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

Every call runs on a snapshot: what a call records through its ``ctx`` (state writes, events,
an outcome, refreshed credentials) is saved only once it returns successfully, in one short
transaction, and no database transaction is open while the plugin talks to its platform.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin
from urllib.parse import parse_qs, urlencode

import httpx
from pydantic import BaseModel, SecretBytes, SecretStr

from metagov import signing
from metagov.errors import PluginError, RateLimited, UpstreamError

__all__ = [
    "AuthType",
    "CredentialsRejected",
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
    "check_url_token",
    "signing",
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


@dataclass(frozen=True)
class SecretUpdate:
    """Credentials a call refreshed: saved encrypted with its other effects."""

    values: dict[str, str | None]
    expires_at: datetime | None


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
    # The gateway's public base URL and the secret fields of the config model, so that a plugin
    # can build its hook URL and refresh its credentials.
    base_url: str = "http://127.0.0.1:8000"
    secret_fields: frozenset[str] = frozenset()
    # When the credentials stored with the instance expire (see ``update_secrets``).
    credentials_expire_at: datetime | None = None
    emitted: list[EmittedEvent] = field(default_factory=list)
    disable_reason: str | None = None
    suspension: tuple[bool, str] | None = None
    secret_update: SecretUpdate | None = None
    notices: dict[str, Any] = field(default_factory=dict)

    def disable_instance(self, reason: str) -> None:
        """Ask the core to disable this instance once the call succeeds (the platform revoked
        our access); its open processes are cancelled and the Driver is told."""
        self.disable_reason = reason

    def suspend_instance(self, reason: str) -> None:
        """Ask the core to suspend this instance once the call succeeds (the platform paused our
        access but may give it back): it is kept with its config, state and processes, its actions
        and process starts answer 409 ``plugin_suspended``, webhooks still reach it, and the
        Driver gets ``plugin.disabled`` with ``suspended: true``."""
        self.suspension = (True, reason)

    def resume_instance(self) -> None:
        """Undo :meth:`suspend_instance` once the call succeeds; the Driver gets
        ``plugin.enabled``."""
        self.suspension = (False, "")

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

    def update_secrets(
        self, values: Mapping[str, str | None], *, expires_at: datetime | None = None
    ) -> None:
        """Replace secret config fields (a refreshed access token), stored encrypted when the call
        succeeds; ``ctx.config`` shows the new values at once. ``expires_at`` says when they stop
        working: the core then calls :meth:`Plugin.refresh_credentials` shortly before."""
        unknown = set(values) - self.secret_fields
        if unknown:
            raise ValueError(f"not secret fields of the config: {sorted(unknown)}")
        update = {k: None if v is None else SecretStr(v) for k, v in values.items()}
        self.config = self.config.model_copy(update=update)
        merged = {**(self.secret_update.values if self.secret_update else {}), **values}
        self.secret_update = SecretUpdate(merged, expires_at)
        self.credentials_expire_at = expires_at

    def tell_driver(self, **values: Any) -> None:
        """Values shown once, under ``notices``, in the answer to the request that enabled or
        re-configured the instance (a generated hook URL, a step the Driver must take by hand).
        Ignored by calls that answer no such request."""
        self.notices.update(values)

    def hook_url(self, **query: str) -> str:
        """This instance's webhook URL (``/api/hooks/{community}/{plugin}``), with ``query``."""
        url = f"{self.base_url.rstrip('/')}/api/hooks/{self.community}/{self.plugin_name}"
        if self.community_platform_id:
            query = {"community_platform_id": self.community_platform_id, **query}
        return f"{url}?{urlencode(query)}" if query else url


@dataclass
class ProcessContext(PluginContext[ConfigT], Generic[ConfigT, OutcomeT]):
    """A :class:`PluginContext` plus the handle on one governance process.

    Hooks change the process through this object: ``url`` and ``closing_at`` are plain
    attributes; ``outcome`` holds the outcome recorded so far; ``set_outcome``, ``complete`` and
    ``fail`` record the result; ``listen`` says which webhooks concern it. The core applies the
    changes after the hook returns, through the one place that checks status transitions.
    """

    process_id: int = 0
    process_state: State = field(default_factory=State)
    url: str | None = None
    closing_at: datetime | None = None
    outcome: OutcomeT | None = None
    requested_status: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    # None until ``listen`` is called: the keys stored with the process stay as they are.
    listen_keys: tuple[str, ...] | None = None

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

    def listen(self, *keys: str) -> None:
        """Receive only the webhooks that :meth:`Plugin.webhook_keys` maps to one of ``keys``
        (a message id, an issue number, a poll id). Usually called in ``start``; calling it again
        replaces the keys, and calling it with none stops every webhook."""
        for key in keys:
            if not key or len(key) > 200:
                raise ValueError("a listen key is a non-empty string of at most 200 characters")
        self.listen_keys = tuple(dict.fromkeys(keys))


@dataclass(frozen=True)
class OAuthInstall:
    """What an OAuth exchange yields: the platform tenant and the instance config to store
    (secrets included; the core encrypts them), plus who installed it.

    For a ``user`` login, ``community_platform_id`` may be None when the platform does not say
    which tenant the user belongs to; ``installer_user_id`` is the user's platform id.
    ``credentials_expire_at`` says when the granted credentials expire (see
    :meth:`Plugin.refresh_credentials`).
    """

    community_platform_id: str | None
    config: dict[str, Any]
    installer_user_id: str | None = None
    credentials_expire_at: datetime | None = None


class OAuthError(Exception):
    """The install cannot go on; ``code`` and ``description`` are sent to the Driver's
    redirect URI as ``error`` and ``error_description``."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class CredentialsRejected(PluginError):
    """The platform refused the instance's credentials (an HTTP 401). Raised by a plugin's
    client, it makes the core run :meth:`Plugin.refresh_credentials` once and retry the call;
    if it happens again, the Driver gets this error (502)."""

    status_code = 502
    code = "credentials_rejected"


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
    """An inbound webhook as received: header names lower-case, the body as raw bytes, and the
    URL's query parameters (without those the plugin declared secret)."""

    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass(frozen=True)
class WebhookReply:
    """A synchronous answer the platform demands (a challenge echo, a PING reply, an
    interaction's acknowledgement)."""

    body: Any = None
    status_code: int = 200
    media_type: str = "application/json"


@dataclass(frozen=True)
class WebhookAccepted:
    """What ``verify_webhook`` returns for an authentic webhook.

    ``delivery_id`` is the platform's id for this delivery (redeliveries repeat it); without one,
    the body's hash de-duplicates. ``community_platform_id`` names the tenant of a platform-wide
    webhook. ``reply`` is answered to the platform at once, once the webhook is stored (a platform
    that wants an answer within seconds gets it while the rest is handled in a job);
    ``store=False`` answers with ``reply`` and stores nothing (handshakes).
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


def check_url_token(
    request: WebhookRequest, expected: SecretStr | str | None, *, param: str = "token"
) -> None:
    """For platforms that do not sign their webhooks: check the secret token the instance's hook
    URL carries in ``?{param}=``, in constant time; raise :class:`WebhookRejected` if it is
    missing or wrong. Declare ``param`` in ``Plugin.webhook_secret_params`` so it is never
    stored."""
    given = request.query.get(param)
    if not given:
        raise WebhookRejected("missing_token")
    want = expected.get_secret_value() if isinstance(expected, SecretStr) else expected
    if not want or not hmac.compare_digest(given.encode(), want.encode()):
        raise WebhookRejected("bad_token")


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

    Subclasses set ``slug``, ``params_model`` and ``outcome_model`` and implement ``start``. Every
    hook gets the process's parameters as the validated ``params_model``. The other hooks are
    optional:

    - ``update`` runs every ``update_interval`` while the process is pending (polling platforms);
    - ``close`` runs when the Driver closes the process early or ``closing_at`` passes; if it does
      not call ``ctx.fail``, the process completes with its current outcome;
    - ``receive_webhook`` gets the webhooks of the process's plugin instance that concern it
      (those :meth:`Plugin.webhook_keys` maps to a key the process ``listen``\\s to; all of them
      if the plugin does not map webhooks) while it is open (a vote cast, a button clicked).

    Hooks of one process never run at the same time. A process that its platform cannot end early
    sets ``closable = False``; the reason shown to a Driver that tries is ``not_closable_reason``.
    """

    slug: ClassVar[str]
    description: ClassVar[str] = ""
    params_model: ClassVar[type[BaseModel]]
    outcome_model: ClassVar[type[BaseModel]]
    update_interval: ClassVar[timedelta | None] = None
    closable: ClassVar[bool] = True
    not_closable_reason: ClassVar[str] = "it ends on the platform"

    async def start(self, ctx: ProcessContext[ConfigT, OutcomeT], params: ParamsT) -> None:
        raise NotImplementedError

    async def update(self, ctx: ProcessContext[ConfigT, OutcomeT], params: ParamsT) -> None:
        return None

    async def close(self, ctx: ProcessContext[ConfigT, OutcomeT], params: ParamsT) -> None:
        return None

    async def receive_webhook(
        self, ctx: ProcessContext[ConfigT, OutcomeT], params: ParamsT, webhook: WebhookRequest
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
      checks each one before anything is stored, ``receive_webhook`` handles it later, in a
      job (it should be idempotent: a job may run twice), and ``webhook_keys`` says which open
      processes it concerns. ``webhook_secret_params`` names query parameters (URL tokens) that
      are checked but never stored.
    - ``settings_model``: app-wide settings (a pydantic-settings class reading e.g.
      ``METAGOV_SLACK__*``), available as ``self.settings``; for credentials of a platform-wide
      app, not of one community.
    - ``oauth_authorize_url`` and ``oauth_exchange``: implement both to let communities install
      the plugin through ``/auth/{plugin}/authorize``.
    - ``refresh_credentials(ctx)``: renews expiring credentials with ``ctx.update_secrets``; run
      ``credentials_refresh_margin`` before they expire, and once after a
      :class:`CredentialsRejected`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    auth_type: ClassVar[AuthType] = AuthType.NONE
    config_model: ClassVar[type[BaseModel]] = EmptyConfig
    community_platform_id_field: ClassVar[str | None] = None
    processes: ClassVar[tuple[type[GovernanceProcess[Any, Any, Any]], ...]] = ()
    event_types: ClassVar[tuple[EventType, ...]] = ()
    webhooks: ClassVar[WebhookScope | None] = None
    webhook_secret_params: ClassVar[frozenset[str]] = frozenset()
    settings_model: ClassVar[type[BaseModel] | None] = None
    credentials_refresh_margin: ClassVar[timedelta] = timedelta(minutes=5)
    settings: Any = None  # an instance of settings_model, set by the registry

    async def initialize(self, ctx: PluginContext[ConfigT]) -> None:
        return None

    def oauth_authorize_url(self, *, kind: str, redirect_uri: str, state: str) -> str:
        """The platform's authorize URL for ``kind`` (``app`` install or ``user`` login)."""
        raise NotImplementedError

    async def oauth_exchange(
        self,
        *,
        kind: str,
        code: str | None,
        redirect_uri: str,
        http: httpx.AsyncClient,
        params: Mapping[str, str],
    ) -> OAuthInstall:
        """Finish an install or login. ``code`` is the callback's authorization code (None if the
        platform sent none, as a GitHub App install without user authorization does); ``params``
        holds every query parameter of the callback (``installation_id``, ``guild_id``…).
        Raise :class:`OAuthError` to refuse."""
        raise NotImplementedError

    async def refresh_credentials(self, ctx: PluginContext[ConfigT]) -> None:
        """Renew the instance's credentials with ``ctx.update_secrets``."""
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

    def webhook_keys(self, webhook: WebhookRequest) -> Sequence[str] | None:
        """The listen keys (see :meth:`ProcessContext.listen`) of the processes a webhook
        concerns: an empty sequence for none. None, the default, hands it to every open process
        of the instance. Runs in the job, before any process hook; no network calls."""
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
