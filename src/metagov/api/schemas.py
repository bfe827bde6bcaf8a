"""Request and response models of the core routes. Field names follow the original Metagov API,
so its Drivers can switch without changes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints

from metagov.db.models import Community, PluginInstance, Process
from metagov.runtime import Runtime
from metagov.services import events
from metagov.services import plugins as plugin_service

Slug = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", min_length=1, max_length=64)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginIn(Strict):
    name: str = Field(max_length=64, description="The plugin's name, e.g. `randomness`")
    config: dict[str, Any] = Field(default_factory=dict, description="Config for the plugin")


class CommunityCreate(Strict):
    slug: Slug | None = Field(None, description="Unique slug; a UUID if left out")
    readable_name: str = Field("", max_length=200)
    plugins: list[PluginIn] = Field(default_factory=list, max_length=100)


class CommunityUpdate(Strict):
    slug: Slug | None = None
    readable_name: str | None = Field(None, max_length=200)
    plugins: list[PluginIn] | None = Field(
        None,
        max_length=100,
        description="If given, exactly these plugins are enabled afterwards",
    )


class PluginOut(BaseModel):
    id: int
    name: str
    community: str
    community_platform_id: str | None
    auth_type: str
    config: dict[str, Any] = Field(description="The config, without its secret fields")
    secrets_set: list[str] = Field(description="Secret fields that hold a value (never shown)")
    suspended_at: datetime | None = Field(
        None, description="Set while the platform has paused the gateway's access"
    )
    notices: dict[str, Any] | None = Field(
        None,
        description="What the plugin shows this once, in the answer to the request that enabled "
        "or re-configured the instance (a generated hook URL, a step to take by hand)",
    )
    created_at: datetime
    updated_at: datetime = Field(description="When the config last changed")

    @classmethod
    def build(
        cls,
        runtime: Runtime,
        instance: PluginInstance,
        community: Community,
        notices: dict[str, Any] | None = None,
    ) -> PluginOut:
        spec = runtime.registry.plugins.get(instance.name)
        return cls(
            id=instance.id,
            name=instance.name,
            community=community.slug,
            community_platform_id=instance.community_platform_id or None,
            auth_type=spec.auth_type.value if spec else "none",
            config=instance.config,
            secrets_set=plugin_service.secrets_set(runtime, instance),
            suspended_at=instance.suspended_at,
            notices=notices or None,
            created_at=instance.created_at,
            updated_at=instance.updated_at,
        )


class CommunityOut(BaseModel):
    slug: str
    readable_name: str
    plugins: list[PluginOut]
    created_at: datetime


ProcessStatusName = Literal["created", "pending", "completed", "failed", "cancelled"]


class ProcessRecord(BaseModel):
    id: int
    name: str = Field(description="`{plugin}.{process}`")
    community: str
    status: ProcessStatusName
    url: str | None = Field(description="Where the process can be seen on the platform")
    outcome: Any = None
    errors: list[dict[str, Any]]
    closing_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def build(cls, process: Process, community: Community) -> ProcessRecord:
        return cls.model_validate(events.process_record(process, community.slug))


class ProcessStart(BaseModel):
    """Fields every process start accepts besides the process's own parameters."""

    callback_url: HttpUrl | None = Field(
        None, description="Also notified when the process's outcome or status changes"
    )


class ActionRequest(Strict):
    parameters: dict[str, Any] = Field(default_factory=dict)


class SchemaInfo(BaseModel):
    id: str
    description: str
    parameters_schema: dict[str, Any]
    response_schema: dict[str, Any] | None
    is_public: bool = False


class EventTypeInfo(BaseModel):
    event_type: str
    source: str
    description: str
    schema_: dict[str, Any] | None = Field(alias="schema", serialization_alias="schema")

    model_config = ConfigDict(populate_by_name=True)


class PluginSchemas(BaseModel):
    config: dict[str, Any]
    actions: list[SchemaInfo]
    processes: list[SchemaInfo]
    events: list[EventTypeInfo]


class PluginMetadata(BaseModel):
    name: str
    description: str
    auth_type: str
    uses_webhook: bool
    community_platform_id_field: str | None
    secret_fields: list[str]
    schemas: PluginSchemas
