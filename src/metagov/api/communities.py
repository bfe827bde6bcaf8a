"""Community routes: create, read, declaratively update, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from metagov.api.deps import CurrentDriver, ReaderDep, RuntimeDep, SessionDep
from metagov.db.models import Community
from metagov.errors import ERROR_RESPONSES
from metagov.instances.schemas import PluginOut
from metagov.runtime import Runtime
from metagov.tenancy import service
from metagov.tenancy.schemas import (
    CommunityCreate,
    CommunityOut,
    CommunityUpdate,
    PluginIn,
    SlugPath,
)

router = APIRouter(
    prefix="/api/internal/community", tags=["communities"], responses=ERROR_RESPONSES
)


async def _out(
    runtime: Runtime, community: Community, notices: service.Notices | None = None
) -> CommunityOut:
    async with runtime.db.snapshot() as session:
        found = await service.community_plugins(session, community)
    notices = notices or {}
    return CommunityOut(
        slug=community.slug,
        readable_name=community.readable_name,
        plugins=[PluginOut.build(runtime, i, community.slug, notices.get(i.id)) for i in found],
        created_at=community.created_at,
    )


def _pairs(plugins: list[PluginIn]) -> list[tuple[str, dict[str, object]]]:
    return [(p.name, p.config) for p in plugins]


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="community.create")
async def create_community(
    body: CommunityCreate, runtime: RuntimeDep, driver: CurrentDriver
) -> CommunityOut:
    community, notices = await service.create_community(
        runtime,
        driver,
        slug=body.slug,
        readable_name=body.readable_name,
        plugins=_pairs(body.plugins),
    )
    return await _out(runtime, community, notices)


@router.get("/{slug}", operation_id="community.get")
async def get_community(
    slug: str, runtime: RuntimeDep, session: ReaderDep, driver: CurrentDriver
) -> CommunityOut:
    return await _out(runtime, await service.get_community(session, driver, slug))


@router.put(
    "/{slug}",
    operation_id="community.update",
    responses={201: {"model": CommunityOut, "description": "The community did not exist"}},
)
async def update_community(
    slug: SlugPath,
    body: CommunityUpdate,
    runtime: RuntimeDep,
    driver: CurrentDriver,
    response: Response,
) -> CommunityOut:
    """Update the community declaratively, or create it as described if it does not exist."""
    community, notices, created = await service.put_community(
        runtime,
        driver,
        slug,
        new_slug=body.slug,
        readable_name=body.readable_name,
        plugins=None if body.plugins is None else _pairs(body.plugins),
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return await _out(runtime, community, notices)


@router.delete("/{slug}", status_code=status.HTTP_204_NO_CONTENT, operation_id="community.delete")
async def delete_community(slug: str, session: SessionDep, driver: CurrentDriver) -> Response:
    await service.delete_community(session, await service.get_community(session, driver, slug))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
