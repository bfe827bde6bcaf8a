"""Community routes: create, read, declaratively update, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.api.deps import CurrentDriver, RuntimeDep, SessionDep
from metagov.api.schemas import CommunityCreate, CommunityOut, CommunityUpdate, PluginIn, PluginOut
from metagov.db.models import Community
from metagov.errors import ERROR_RESPONSES
from metagov.runtime import Runtime
from metagov.services import communities as service

router = APIRouter(
    prefix="/api/internal/community", tags=["communities"], responses=ERROR_RESPONSES
)


async def _out(
    session: AsyncSession,
    runtime: Runtime,
    community: Community,
    notices: service.Notices | None = None,
) -> CommunityOut:
    instances = await service.community_plugins(session, community)
    notices = notices or {}
    return CommunityOut(
        slug=community.slug,
        readable_name=community.readable_name,
        plugins=[PluginOut.build(runtime, i, community, notices.get(i.id)) for i in instances],
        created_at=community.created_at,
    )


def _pairs(plugins: list[PluginIn]) -> list[tuple[str, dict[str, object]]]:
    return [(p.name, p.config) for p in plugins]


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="community.create")
async def create_community(
    body: CommunityCreate, runtime: RuntimeDep, session: SessionDep, driver: CurrentDriver
) -> CommunityOut:
    community, notices = await service.create_community(
        session,
        runtime,
        driver,
        slug=body.slug,
        readable_name=body.readable_name,
        plugins=_pairs(body.plugins),
    )
    return await _out(session, runtime, community, notices)


@router.get("/{slug}", operation_id="community.get")
async def get_community(
    slug: str, runtime: RuntimeDep, session: SessionDep, driver: CurrentDriver
) -> CommunityOut:
    return await _out(session, runtime, await service.get_community(session, driver, slug))


@router.put("/{slug}", operation_id="community.update")
async def update_community(
    slug: str,
    body: CommunityUpdate,
    runtime: RuntimeDep,
    session: SessionDep,
    driver: CurrentDriver,
) -> CommunityOut:
    community = await service.get_community(session, driver, slug)
    notices = await service.update_community(
        session,
        runtime,
        community,
        slug=body.slug,
        readable_name=body.readable_name,
        plugins=None if body.plugins is None else _pairs(body.plugins),
    )
    return await _out(session, runtime, community, notices)


@router.delete("/{slug}", status_code=status.HTTP_204_NO_CONTENT, operation_id="community.delete")
async def delete_community(slug: str, session: SessionDep, driver: CurrentDriver) -> Response:
    await service.delete_community(session, await service.get_community(session, driver, slug))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
