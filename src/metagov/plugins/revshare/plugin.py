"""The RevShare plugin: a community's revenue-sharing configs, kept in its plugin state.

There is no platform behind it. A Driver maintains one or more configs (``key``) of weighted
payment pointers; a web page that uses Web Monetization asks ``pick-pointer`` (public, no Driver
key needed) which pointer to pay for each visit, so that over many visits every pointer gets its
share of the revenue in proportion to its weight.
"""

from __future__ import annotations

import random
from typing import Any

from metagov.plugins.revshare.schemas import (
    MAX_POINTERS,
    AddPointer,
    KeyParams,
    PickedPointer,
    RemovePointer,
    ReplaceConfig,
    RevShareConfig,
)
from metagov.plugins.sdk import Plugin, PluginContext, PluginError, action

Ctx = PluginContext[Any]

# Picks need no cryptographic strength, but the system source keeps them independent of anything
# else in the process that seeds the module-level generator.
_rng = random.SystemRandom()


class NoPointers(PluginError):
    status_code = 404
    code = "revshare_empty"


def _state_key(key: str) -> str:
    return f"pointers:{key}"


def _load(ctx: Ctx, key: str) -> dict[str, int]:
    stored = ctx.state.get(_state_key(key)) or {}
    return {str(pointer): int(weight) for pointer, weight in stored.items()}


def _save(ctx: Ctx, key: str, pointers: dict[str, int]) -> RevShareConfig:
    if pointers:
        ctx.state.set(_state_key(key), pointers)
    else:
        ctx.state.delete(_state_key(key))
    return RevShareConfig(key=key, pointers=pointers)


class RevSharePlugin(Plugin[Any]):
    """Web Monetization revenue sharing: weighted payment pointers, picked at random."""

    name = "revshare"

    @action(
        "add-pointer",
        description="Add a payment pointer with its weight, or change the weight of one already "
        "in the config",
    )
    async def add_pointer(self, ctx: Ctx, params: AddPointer) -> RevShareConfig:
        pointers = _load(ctx, params.key)
        if params.pointer not in pointers and len(pointers) >= MAX_POINTERS:
            raise PluginError(
                f"the config {params.key!r} already has {MAX_POINTERS} pointers",
                code="revshare_full",
            )
        pointers[params.pointer] = params.weight
        return _save(ctx, params.key, pointers)

    @action(
        "remove-pointer",
        description="Remove a payment pointer from the config (nothing happens if it is not in it)",
    )
    async def remove_pointer(self, ctx: Ctx, params: RemovePointer) -> RevShareConfig:
        pointers = _load(ctx, params.key)
        pointers.pop(params.pointer, None)
        return _save(ctx, params.key, pointers)

    @action("replace-config", description="Replace every pointer of the config at once")
    async def replace_config(self, ctx: Ctx, params: ReplaceConfig) -> RevShareConfig:
        return _save(ctx, params.key, dict(params.pointers))

    @action("get-config", description="The pointers of the config and their weights", public=True)
    async def get_config(self, ctx: Ctx, params: KeyParams) -> RevShareConfig:
        return RevShareConfig(key=params.key, pointers=_load(ctx, params.key))

    @action(
        "pick-pointer",
        description="A payment pointer of the config, picked at random in proportion to its "
        "weight (probabilistic revenue sharing)",
        public=True,
    )
    async def pick_pointer(self, ctx: Ctx, params: KeyParams) -> PickedPointer:
        pointers = _load(ctx, params.key)
        if not pointers:
            raise NoPointers(f"the config {params.key!r} has no payment pointers")
        [chosen] = _rng.choices(list(pointers), weights=list(pointers.values()))
        return PickedPointer(pointer=chosen)
