"""Performing plugin actions on behalf of a Driver."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.models import Community, PluginInstance
from metagov.plugins.registry import ActionSpec, PluginSpec
from metagov.runtime import Runtime
from metagov.services.plugins import build_context, call_plugin, ensure_active, save_effects
from metagov.services.processes import PluginContractError


async def perform_action(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    instance: PluginInstance,
    spec: PluginSpec,
    action: ActionSpec,
    params: BaseModel,
) -> BaseModel | None:
    """Run ``action`` on the instance the route chose and save its effects."""
    ensure_active(instance, spec.name)
    ctx = build_context(runtime, spec, community, instance)
    result = await call_plugin(spec, ctx, lambda: action.method(ctx, params))
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
