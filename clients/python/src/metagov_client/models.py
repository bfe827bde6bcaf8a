"""What the gateway returns, as frozen dataclasses.

Dataclasses rather than pydantic models keep the client's only dependency httpx: a Driver built
on Django, Flask or pydantic v1 can install it without a version clash. Each ``from_json`` reads
the fields it knows and ignores the others, so a newer gateway that adds fields does not break an
older client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TypeAlias, cast

ProcessStatus = Literal["created", "pending", "completed", "failed", "cancelled"]
DeliveryStatus = Literal["pending", "succeeded", "dead"]

OPEN_STATUSES: frozenset[str] = frozenset({"created", "pending"})
"""Statuses of a process that has not ended yet; any other status is final."""

_EVENT_ID = re.compile(r"^evt_(\d+)$")


def parse_datetime(value: str) -> datetime:
    """An ISO 8601 date-time from the gateway. Python 3.10's ``fromisoformat`` does not read the
    ``Z`` suffix the gateway writes, hence the replacement."""
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value)


def _optional_datetime(value: Any) -> datetime | None:
    return None if value is None else parse_datetime(str(value))


def _dict(value: Any) -> dict[str, Any]:
    return dict(cast(Mapping[str, Any], value)) if value else {}


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """One plugin to enable in a community, as sent in a community's ``plugins`` list."""

    name: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "config": dict(self.config)}


PluginsArg: TypeAlias = Mapping[str, Mapping[str, Any]] | Sequence[PluginConfig]
"""Plugins for a community: ``{"randomness": {...}, "webhook": {...}}``, or a list of
:class:`PluginConfig` when the community has several instances of one plugin."""


def plugins_json(plugins: PluginsArg) -> list[dict[str, Any]]:
    if isinstance(plugins, Mapping):
        return [PluginConfig(name, config).to_json() for name, config in plugins.items()]
    return [p.to_json() for p in plugins]


@dataclass(frozen=True, slots=True)
class Plugin:
    """A plugin instance enabled in a community. ``config`` never holds the secret fields;
    ``secrets_set`` names those that have a stored value. ``suspended_at`` is set while the
    platform has paused the gateway's access; ``notices`` is what the plugin shows once, in the
    answer that enabled or re-configured the instance (a generated hook URL, a manual step)."""

    id: int
    name: str
    community: str
    community_platform_id: str | None
    auth_type: str
    config: dict[str, Any]
    secrets_set: list[str]
    created_at: datetime
    updated_at: datetime
    suspended_at: datetime | None = None
    notices: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plugin:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            community=str(data["community"]),
            community_platform_id=data.get("community_platform_id"),
            auth_type=str(data.get("auth_type", "none")),
            config=_dict(data.get("config")),
            secrets_set=list(data.get("secrets_set") or []),
            created_at=parse_datetime(data["created_at"]),
            updated_at=parse_datetime(data["updated_at"]),
            suspended_at=_optional_datetime(data.get("suspended_at")),
            notices=_dict(data["notices"]) if data.get("notices") else None,
        )


@dataclass(frozen=True, slots=True)
class Community:
    """A community and the plugin instances enabled in it."""

    slug: str
    readable_name: str
    plugins: list[Plugin]
    created_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Community:
        return cls(
            slug=str(data["slug"]),
            readable_name=str(data.get("readable_name") or ""),
            plugins=[Plugin.from_json(p) for p in data.get("plugins") or []],
            created_at=parse_datetime(data["created_at"]),
        )

    def plugin(self, name: str, community_platform_id: str | None = None) -> Plugin | None:
        """The instance of ``name`` (with that platform id, if given), or ``None``."""
        for p in self.plugins:
            if p.name == name and (
                community_platform_id is None or p.community_platform_id == community_platform_id
            ):
                return p
        return None


@dataclass(frozen=True, slots=True)
class Process:
    """A governance process (a vote, mostly), as the gateway records it."""

    id: int
    name: str
    community: str
    status: ProcessStatus
    url: str | None
    outcome: Any
    errors: list[dict[str, Any]]
    closing_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Process:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            community=str(data["community"]),
            status=cast(ProcessStatus, data["status"]),
            url=data.get("url"),
            outcome=data.get("outcome"),
            errors=list(data.get("errors") or []),
            closing_at=_optional_datetime(data.get("closing_at")),
            created_at=parse_datetime(data["created_at"]),
            updated_at=parse_datetime(data["updated_at"]),
        )

    @property
    def plugin(self) -> str:
        """The plugin that runs the process: ``randomness`` for ``randomness.delayed-…``."""
        return self.name.partition(".")[0]

    @property
    def is_open(self) -> bool:
        """Whether it can still change (``created`` or ``pending``)."""
        return self.status in OPEN_STATUSES


@dataclass(frozen=True, slots=True)
class Event:
    """One event: the envelope the gateway delivers, and what ``GET /events`` lists.

    ``event_id`` is the cursor for :meth:`list_events`'s ``after``. Listed events carry it; a
    delivered envelope does not, so it is read from ``id`` (``evt_<event_id>``).
    """

    id: str
    event_id: int
    community: str
    source: str
    event_type: str
    timestamp: str
    data: dict[str, Any]
    initiator: dict[str, Any] | None
    seq: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        event_id = data.get("event_id")
        if event_id is None:
            match = _EVENT_ID.match(str(data["id"]))
            event_id = int(match.group(1)) if match else 0
        initiator = data.get("initiator")
        return cls(
            id=str(data["id"]),
            event_id=int(event_id),
            community=str(data["community"]),
            source=str(data["source"]),
            event_type=str(data["event_type"]),
            timestamp=str(data["timestamp"]),
            data=_dict(data.get("data")),
            initiator=None if initiator is None else _dict(initiator),
            seq=int(data.get("seq") or 0),
        )

    @property
    def time(self) -> datetime:
        """``timestamp`` (seconds since the epoch, as a string) as an aware date-time."""
        return datetime.fromtimestamp(float(self.timestamp), tz=timezone.utc)

    @property
    def process(self) -> Process | None:
        """For ``process.*`` events, the process record they carry as ``data``."""
        if not self.event_type.startswith("process.") or "status" not in self.data:
            return None
        return Process.from_json(self.data)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of an event to the Driver's event URL (``target`` ``driver``) or to a
    process's ``callback_url`` (``callback``)."""

    id: int
    event_id: int
    target: str
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delivery:
        return cls(
            id=int(data["id"]),
            event_id=int(data["event_id"]),
            target=str(data["target"]),
            url=str(data["url"]),
            status=cast(DeliveryStatus, data["status"]),
            attempts=int(data["attempts"]),
            next_attempt_at=parse_datetime(data["next_attempt_at"]),
            last_status_code=data.get("last_status_code"),
            last_error=data.get("last_error"),
            created_at=parse_datetime(data["created_at"]),
            delivered_at=_optional_datetime(data.get("delivered_at")),
        )


@dataclass(frozen=True, slots=True)
class OperationInfo:
    """An action or process a plugin declares, with its JSON Schemas."""

    id: str
    description: str
    parameters_schema: dict[str, Any]
    response_schema: dict[str, Any] | None
    is_public: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OperationInfo:
        response = data.get("response_schema")
        return cls(
            id=str(data["id"]),
            description=str(data.get("description") or ""),
            parameters_schema=_dict(data.get("parameters_schema")),
            response_schema=None if response is None else _dict(response),
            is_public=bool(data.get("is_public", False)),
        )


@dataclass(frozen=True, slots=True)
class EventTypeInfo:
    """An event type a plugin declares."""

    event_type: str
    source: str
    description: str
    schema: dict[str, Any] | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventTypeInfo:
        schema = data.get("schema")
        return cls(
            event_type=str(data["event_type"]),
            source=str(data["source"]),
            description=str(data.get("description") or ""),
            schema=None if schema is None else _dict(schema),
        )


@dataclass(frozen=True, slots=True)
class PluginMetadata:
    """What a plugin is and declares: its config schema, actions, processes and events."""

    name: str
    description: str
    auth_type: str
    uses_webhook: bool
    community_platform_id_field: str | None
    secret_fields: list[str]
    config_schema: dict[str, Any]
    actions: list[OperationInfo]
    processes: list[OperationInfo]
    events: list[EventTypeInfo]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PluginMetadata:
        schemas = data.get("schemas") or {}
        return cls(
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            auth_type=str(data.get("auth_type", "none")),
            uses_webhook=bool(data.get("uses_webhook", False)),
            community_platform_id_field=data.get("community_platform_id_field"),
            secret_fields=list(data.get("secret_fields") or []),
            config_schema=_dict(schemas.get("config")),
            actions=[OperationInfo.from_json(a) for a in schemas.get("actions") or []],
            processes=[OperationInfo.from_json(p) for p in schemas.get("processes") or []],
            events=[EventTypeInfo.from_json(e) for e in schemas.get("events") or []],
        )
