"""Request and response models of communities. Field names follow the original Metagov API, so
its Drivers can switch without changes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from metagov.instances.schemas import PluginOut

Slug = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", min_length=1, max_length=64)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginIn(Strict):
    name: str = Field(max_length=64, description="The plugin's name, e.g. `randomness`")
    config: dict[str, Any] = Field(default_factory=dict, description="Config for the plugin")


def _name_is_slug(data: Any) -> Any:
    """Drivers of the original Metagov (and its design document) name the slug ``name``."""
    if isinstance(data, dict) and "name" in data and "slug" in data:
        if data["name"] != data["slug"]:
            raise ValueError("give either slug or name (its older spelling), not both")
        data = {k: v for k, v in data.items() if k != "name"}
    return data


class CommunityCreate(Strict):
    slug: Slug | None = Field(
        None,
        description="Unique slug; a UUID if left out. `name` is accepted as an older spelling.",
        validation_alias=AliasChoices("slug", "name"),
    )
    readable_name: str = Field("", max_length=200)
    plugins: list[PluginIn] = Field(default_factory=list, max_length=100)

    _name = model_validator(mode="before")(_name_is_slug)


class CommunityUpdate(Strict):
    slug: Slug | None = Field(
        None,
        description="A new slug. `name` is accepted as an older spelling.",
        validation_alias=AliasChoices("slug", "name"),
    )
    readable_name: str | None = Field(None, max_length=200)
    plugins: list[PluginIn] | None = Field(
        None,
        max_length=100,
        description="If given, exactly these plugins are enabled afterwards",
    )

    _name = model_validator(mode="before")(_name_is_slug)


class CommunityOut(BaseModel):
    slug: str
    readable_name: str
    plugins: list[PluginOut]
    created_at: datetime
