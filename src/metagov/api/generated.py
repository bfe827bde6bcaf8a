"""Routes generated from plugin declarations: one typed operation per config, action and process.

Each route has the plugin's own models as request body and ``response_model``, so ``/docs`` shows
exactly what every action and process takes and returns. (No ``from __future__ import
annotations`` here: FastAPI must see the models bound in each closure, not strings.)
"""

import inspect
import re
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Annotated, Any, Optional, cast

from fastapi import APIRouter, Body, Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from metagov.api.deps import (
    CurrentCommunity,
    PluginTarget,
    ReaderDep,
    RowId,
    RuntimeDep,
    plugin_target,
    public_target,
)
from metagov.errors import ERROR_RESPONSES
from metagov.instances import service as instances
from metagov.instances.schemas import PluginOut
from metagov.plugins.registry import ActionSpec, PluginSpec, ProcessSpec
from metagov.processes import service as processes
from metagov.processes.schemas import ProcessRecord, ProcessStart

Endpoint = Callable[..., Coroutine[Any, Any, Any]]

PlatformIdQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Which instance to use when the community has several of this plugin",
    ),
]


def _camel(*parts: str) -> str:
    return "".join(word.capitalize() for part in parts for word in re.split(r"[-_.]", part))


# Generated routers by plugin spec: building one is most of the cost of building the app (FastAPI
# analyses every route's models), and the routes hold nothing but the spec, so an app built again
# for the same plugins (another worker process, each test) reuses them. Holding the spec keeps
# its id from being reused by another object.
_ROUTERS: OrderedDict[int, tuple[PluginSpec, APIRouter]] = OrderedDict()
_ROUTERS_KEPT = 256


def plugin_router(spec: PluginSpec) -> APIRouter:
    """The typed routes of one plugin: its config, actions and processes."""
    found = _ROUTERS.get(id(spec))
    if found is not None and found[0] is spec:
        _ROUTERS.move_to_end(id(spec))
        return found[1]
    router = _build_router(spec)
    _ROUTERS[id(spec)] = (spec, router)
    while len(_ROUTERS) > _ROUTERS_KEPT:
        _ROUTERS.popitem(last=False)
    return router


def _build_router(spec: PluginSpec) -> APIRouter:
    router = APIRouter(responses=ERROR_RESPONSES)
    _config_routes(router, spec)
    for action in spec.actions.values():
        _action_routes(router, spec, action)
    for pspec in spec.processes.values():
        _process_routes(router, spec, pspec)
    return router


def _update_model(spec: PluginSpec) -> type[BaseModel]:
    """The config model with its secret fields optional: left out, they keep their stored value."""
    if not spec.secret_fields:
        return spec.config_model
    fields: Any = {
        name: (Optional[spec.config_model.model_fields[name].annotation], None)  # noqa: UP045
        for name in spec.secret_fields
    }
    return create_model(_camel(spec.name, "config-update"), __base__=spec.config_model, **fields)


def _config_routes(router: APIRouter, spec: PluginSpec) -> None:
    config_model = spec.config_model
    update_model = _update_model(spec)
    tags: list[str | Enum] = [f"plugin: {spec.name}"]

    @router.post(
        f"/api/internal/plugin/{spec.name}",
        operation_id=f"{spec.name}.enable",
        summary=f"Enable {spec.name} in the community",
        status_code=status.HTTP_201_CREATED,
        response_model=PluginOut,
        tags=tags,
        responses={200: {"model": PluginOut, "description": "Re-configured an existing instance"}},
    )
    async def enable(
        runtime: RuntimeDep,
        community: CurrentCommunity,
        config: Annotated[config_model, Body()],  # type: ignore[valid-type]
        response: Response,
    ) -> PluginOut:
        enabled = await instances.enable_plugin(
            runtime, community, spec, cast(BaseModel, config).model_dump()
        )
        if not enabled.created:
            response.status_code = status.HTTP_200_OK
        return PluginOut.build(runtime, enabled.instance, community.slug, enabled.notices)

    @router.put(
        f"/api/internal/plugin/{spec.name}/{{instance_id}}",
        operation_id=f"{spec.name}.configure",
        summary=f"Re-configure an instance of {spec.name}, keeping its state and processes",
        response_model=PluginOut,
        tags=tags,
    )
    async def configure(
        runtime: RuntimeDep,
        community: CurrentCommunity,
        instance_id: RowId,
        config: Annotated[update_model, Body()],  # type: ignore[valid-type]
    ) -> PluginOut:
        enabled = await instances.reconfigure_instance(
            runtime, community, spec, instance_id, _without_missing_secrets(config, spec)
        )
        return PluginOut.build(runtime, enabled.instance, community.slug, enabled.notices)


def _without_missing_secrets(config: BaseModel, spec: PluginSpec) -> dict[str, Any]:
    """The sent config, minus secret fields the Driver left out (so they keep their value)."""
    data = config.model_dump()
    for name in spec.secret_fields:
        if name not in config.model_fields_set:
            data.pop(name, None)
    return data


def _action_body(spec: PluginSpec, action: ActionSpec) -> tuple[type[BaseModel], bool]:
    """The request body ``{"parameters": {...}}``; optional when the parameters can be empty."""
    model = action.input_model
    required = not _accepts_empty(model)
    default: Any = ... if required else Field(default_factory=model)
    body: type[BaseModel] = create_model(
        _camel(spec.name, action.slug, "request"),
        __config__=ConfigDict(extra="forbid"),
        parameters=(model, default),
    )
    return body, required


def _accepts_empty(model: type[BaseModel]) -> bool:
    """Whether ``{}`` is valid parameters: no required field, and no validator that wants one
    of several optional fields."""
    try:
        model()
    except ValidationError:
        return False
    return True


def _typed_body(model: type[BaseModel], required: bool) -> Callable[[Endpoint], Endpoint]:
    """Give an endpoint's ``body`` parameter its real type: required (no default, `null`
    refused) or optional. A ``def`` cannot choose between the two, so the signature is rewritten;
    FastAPI reads endpoints through ``inspect.signature``."""

    def rewrite(endpoint: Endpoint) -> Endpoint:
        signature = inspect.signature(endpoint)
        others = [p for p in signature.parameters.values() if p.name != "body"]
        body = inspect.Parameter(
            "body",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[model if required else Optional[model], Body()],  # noqa: UP045
            default=inspect.Parameter.empty if required else None,
        )
        endpoint.__signature__ = signature.replace(parameters=[*others, body])  # type: ignore[attr-defined]
        return endpoint

    return rewrite


def _action_routes(router: APIRouter, spec: PluginSpec, action: ActionSpec) -> None:
    body_model, required = _action_body(spec, action)
    output = action.output_model
    tags: list[str | Enum] = [f"plugin: {spec.name}"]
    declared = dict(
        summary=action.description or f"{spec.name}.{action.slug}",
        response_model=output,
        status_code=status.HTTP_200_OK if output else status.HTTP_204_NO_CONTENT,
        tags=tags,
    )

    async def run(
        runtime: Any,
        target: PluginTarget,
        community_platform_id: str | None,
        body: Any,
        *,
        anonymous: bool = False,
    ) -> Any:
        community = target.community
        instance = instances.choose_instance(
            target.instances, community.slug, spec.name, community_platform_id, anonymous=anonymous
        )
        params = action.input_model() if body is None else body.parameters
        result = await instances.perform_action(
            runtime, community.slug, instance, spec, action, params
        )
        return result if output else Response(status_code=status.HTTP_204_NO_CONTENT)

    target_of_plugin = plugin_target(spec.name)

    @router.post(
        f"/api/internal/action/{spec.name}.{action.slug}",
        operation_id=f"{spec.name}.{action.slug}",
        **declared,  # type: ignore[arg-type]
    )
    @_typed_body(body_model, required)
    async def perform(
        runtime: RuntimeDep,
        target: Annotated[PluginTarget, Depends(target_of_plugin)],
        community_platform_id: PlatformIdQuery = None,
        body: Any = None,
    ) -> Any:
        return await run(runtime, target, community_platform_id, body)

    if not action.public:
        return
    public_target_of_plugin = public_target(spec.name)

    @router.post(
        f"/api/action/{spec.name}.{action.slug}",
        operation_id=f"{spec.name}.{action.slug}.public",
        **declared,  # type: ignore[arg-type]
    )
    @_typed_body(body_model, required)
    async def perform_public(
        runtime: RuntimeDep,
        target: Annotated[PluginTarget, Depends(public_target_of_plugin)],
        community_platform_id: PlatformIdQuery = None,
        body: Any = None,
    ) -> Any:
        return await run(runtime, target, community_platform_id, body, anonymous=True)


def _process_routes(router: APIRouter, spec: PluginSpec, pspec: ProcessSpec) -> None:
    full = f"{spec.name}.{pspec.slug}"
    camel = _camel(spec.name, pspec.slug)
    start_model: type[BaseModel] = create_model(
        f"{camel}Start", __base__=(pspec.params_model, ProcessStart)
    )
    outcome: Any = (Optional[pspec.outcome_model], Field(None, description="The outcome so far"))  # noqa: UP045
    record_model: type[ProcessRecord] = create_model(
        f"{camel}Record", __base__=ProcessRecord, outcome=outcome
    )
    param_names = list(pspec.params_model.model_fields)
    tags: list[str | Enum] = [f"plugin: {spec.name}"]
    path = f"/api/internal/process/{full}"

    def record(process: Any, community: Any) -> ProcessRecord:
        return record_model.build(process, community.slug)

    target_of_plugin = plugin_target(spec.name)

    @router.post(
        path,
        operation_id=full,
        summary=pspec.description or f"Start {full}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=record_model,
        tags=tags,
        responses={202: {"headers": {"Location": {"schema": {"type": "string"}}}}},
    )
    async def start(
        runtime: RuntimeDep,
        target: Annotated[PluginTarget, Depends(target_of_plugin)],
        body: Annotated[start_model, Body()],
        response: Response,
        community_platform_id: PlatformIdQuery = None,
    ) -> Any:
        params = pspec.params_model.model_validate({n: getattr(body, n) for n in param_names})
        callback = getattr(body, "callback_url", None)
        community = target.community
        instance = instances.choose_instance(
            target.instances, community.slug, spec.name, community_platform_id
        )
        process = await processes.start_process(
            runtime,
            community,
            instance,
            spec,
            pspec,
            params,
            callback_url=str(callback) if callback else None,
        )
        response.headers["Location"] = f"{path}/{process.id}"
        return record(process, community)

    @router.get(
        f"{path}/{{process_id}}",
        operation_id=f"{full}.get",
        summary=f"Read a {full} process",
        response_model=record_model,
        tags=tags,
    )
    async def read(session: ReaderDep, community: CurrentCommunity, process_id: RowId) -> Any:
        process = await processes.get_process(session, community, spec.name, pspec.slug, process_id)
        return record(process, community)

    @router.delete(
        f"{path}/{{process_id}}",
        operation_id=f"{full}.close",
        summary=f"Close a {full} process now and return its final record",
        response_model=record_model,
        tags=tags,
    )
    async def close(runtime: RuntimeDep, community: CurrentCommunity, process_id: RowId) -> Any:
        process = await processes.close_process(
            runtime, community, spec.name, pspec.slug, process_id
        )
        return record(process, community)
