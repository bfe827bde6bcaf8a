"""Plugin routes that are the same for every plugin: metadata, schemas, disabling an instance,
listing processes, and clear 404s for names no plugin declares."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from metagov.api.deps import (
    MAX_ID,
    CurrentCommunity,
    CurrentDriver,
    ReaderDep,
    RowId,
    RuntimeDep,
    SessionDep,
)
from metagov.errors import ERROR_RESPONSES, NotFound
from metagov.instances import service as instances
from metagov.instances.schemas import EventTypeInfo, PluginMetadata, PluginSchemas, SchemaInfo
from metagov.plugins.registry import PluginSpec
from metagov.processes import service as processes
from metagov.processes.schemas import ProcessRecord, ProcessStatusName

router = APIRouter(prefix="/api/internal", tags=["plugins"], responses=ERROR_RESPONSES)


def metadata(spec: PluginSpec) -> PluginMetadata:
    return PluginMetadata(
        name=spec.name,
        description=spec.description,
        auth_type=spec.auth_type.value,
        uses_webhook=spec.webhooks is not None,
        community_platform_id_field=spec.community_platform_id_field,
        secret_fields=sorted(spec.secret_fields),
        schemas=PluginSchemas(
            config=spec.config_model.model_json_schema(),
            actions=[
                SchemaInfo(
                    id=f"{spec.name}.{a.slug}",
                    description=a.description,
                    parameters_schema=a.input_model.model_json_schema(),
                    response_schema=a.output_model.model_json_schema() if a.output_model else None,
                    is_public=a.public,
                )
                for a in spec.actions.values()
            ],
            processes=[
                SchemaInfo(
                    id=f"{spec.name}.{p.slug}",
                    description=p.description,
                    parameters_schema=p.params_model.model_json_schema(),
                    response_schema=p.outcome_model.model_json_schema(),
                )
                for p in spec.processes.values()
            ],
            events=[
                EventTypeInfo(
                    event_type=e.name,
                    source=spec.name,
                    description=e.description,
                    schema_=e.data_model.model_json_schema() if e.data_model else None,
                )
                for e in spec.event_types
            ],
        ),
    )


@router.get("/plugin/{name}/metadata", operation_id="plugins.metadata")
async def plugin_metadata(name: str, runtime: RuntimeDep, _: CurrentDriver) -> PluginMetadata:
    return metadata(runtime.registry.get(name))


@router.get("/plugin-schemas", operation_id="plugins.schemas")
async def plugin_schemas(runtime: RuntimeDep, _: CurrentDriver) -> dict[str, dict[str, object]]:
    """Every plugin's config JSON Schema, by plugin name."""
    return {spec.name: spec.config_model.model_json_schema() for spec in runtime.registry}


@router.delete(
    "/plugin/{name}/{instance_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="plugins.disable",
)
async def disable_plugin(
    name: str, instance_id: RowId, session: SessionDep, community: CurrentCommunity
) -> Response:
    """Disable a plugin instance. Its open processes are cancelled."""
    await instances.disable_by_id(session, community, name, instance_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/process", operation_id="processes.list", tags=["processes"])
async def list_processes(
    session: ReaderDep,
    community: CurrentCommunity,
    status: ProcessStatusName | None = None,
    plugin: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[ProcessRecord]:
    """The community's processes, newest first."""
    found = await processes.list_processes(
        session, community, status=status, plugin=plugin, limit=limit, offset=offset
    )
    return [ProcessRecord.build(p, community.slug) for p in found]


# Fallbacks, registered after the generated routes: a name no plugin declares gets a 404 that
# says which name is unknown, instead of a bare "Not Found".
fallback = APIRouter(include_in_schema=False)


def _split(full: str, runtime: RuntimeDep) -> tuple[PluginSpec, str]:
    plugin, _, slug = full.partition(".")
    return runtime.registry.get(plugin), slug


@fallback.post("/api/internal/plugin/{name}")
@fallback.put("/api/internal/plugin/{name}/{instance_id}")
async def unknown_plugin(name: str, runtime: RuntimeDep, _: CurrentDriver) -> None:
    runtime.registry.get(name)
    raise NotFound(f"no such route for plugin {name!r}")


@fallback.post("/api/internal/action/{full}")
async def unknown_action(full: str, runtime: RuntimeDep, _: CurrentDriver) -> None:
    spec, slug = _split(full, runtime)
    spec.action(slug)
    raise NotFound(f"no such route for action {full!r}")


@fallback.post("/api/action/{full}")
async def unknown_public_action(full: str, runtime: RuntimeDep) -> None:
    spec, slug = _split(full, runtime)
    if slug in spec.actions:
        raise NotFound(f"action {full!r} is not public")
    spec.action(slug)


@fallback.post("/api/internal/process/{full}")
@fallback.get("/api/internal/process/{full}/{process_id}")
@fallback.delete("/api/internal/process/{full}/{process_id}")
async def unknown_process(full: str, runtime: RuntimeDep, _: CurrentDriver) -> None:
    spec, slug = _split(full, runtime)
    spec.process(slug)
    raise NotFound(f"no such route for process {full!r}")
