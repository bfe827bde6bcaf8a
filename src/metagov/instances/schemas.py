"""How Drivers see plugin instances and plugins' declarations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from metagov.db.models import PluginInstance
from metagov.instances.service import secrets_set
from metagov.runtime import Runtime


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
        community_slug: str,
        notices: dict[str, Any] | None = None,
    ) -> PluginOut:
        spec = runtime.registry.plugins.get(instance.name)
        return cls(
            id=instance.id,
            name=instance.name,
            community=community_slug,
            community_platform_id=instance.community_platform_id or None,
            auth_type=spec.auth_type.value if spec else "none",
            config=instance.config,
            secrets_set=secrets_set(runtime, instance),
            suspended_at=instance.suspended_at,
            notices=notices or None,
            created_at=instance.created_at,
            updated_at=instance.updated_at,
        )


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
