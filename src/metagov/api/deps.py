"""FastAPI dependencies: the runtime, the request's unit of work, the Driver and its community."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from metagov.db.engine import single_statement
from metagov.db.models import Community, Driver, PluginInstance
from metagov.errors import BadRequest, NotFound, Unauthorized
from metagov.jobs.queue import ring
from metagov.runtime import Runtime
from metagov.services import communities, drivers

COMMUNITY_HEADER = "X-Metagov-Community"
# Row ids are 32-bit integers in the database; a larger number can name no row.
MAX_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="A row id")]


# Dependencies are ``async def`` even when they do not await: FastAPI runs plain ``def``
# dependencies in a thread pool, which costs more than they do.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back if it raises,
    and in both cases before the response is sent, so a 2xx always means "stored". Jobs rung
    during the request are enqueued after the commit."""
    async with runtime.sessions() as session:
        async with session.begin():
            yield session
        await ring(runtime, session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="A Driver API key from `metagov drivers create`")


async def _api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing Driver API key: send `Authorization: Bearer <key>`")
    return credentials.credentials


ApiKey = Annotated[str, Depends(_api_key)]
_INVALID_KEY = "invalid or revoked Driver API key"


async def current_driver(session: SessionDep, api_key: ApiKey) -> Driver:
    driver = await drivers.authenticate(session, api_key)
    if driver is None:
        raise Unauthorized(_INVALID_KEY)
    return driver


CurrentDriver = Annotated[Driver, Depends(current_driver)]


async def _community_header(
    x_metagov_community: Annotated[
        str | None,
        Header(
            alias=COMMUNITY_HEADER,
            description="Slug of the community the request is about",
            max_length=64,
        ),
    ] = None,
) -> str:
    if not x_metagov_community:
        raise BadRequest(f"missing required header {COMMUNITY_HEADER}", code="missing_community")
    return x_metagov_community


async def _community_for_key(
    session: AsyncSession, api_key: str, slug: str, plugin: str | None = None
) -> tuple[Community, list[PluginInstance]]:
    """The Driver's community and its instances of ``plugin``, found with the Driver in one
    query: 401 for a bad key first, then 404 for a community the Driver cannot see."""
    driver, community, instances = await communities.get_for_key(session, api_key, slug, plugin)
    if driver is None:
        raise Unauthorized(_INVALID_KEY)
    if community is None:
        raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return community, instances


async def current_community(
    session: SessionDep,
    api_key: ApiKey,
    slug: Annotated[str, Depends(_community_header)],
) -> Community:
    """The Driver's community named in the header."""
    community, _ = await _community_for_key(session, api_key, slug)
    return community


@dataclass(frozen=True)
class PluginTarget:
    """The community a request names, with its instances of the plugin the route is for."""

    community: Community
    instances: list[PluginInstance]


def plugin_target(plugin: str) -> Callable[..., Awaitable[PluginTarget]]:
    """A dependency like :data:`CurrentCommunity` for the routes of one plugin, which also
    brings the community's instances of that plugin, in the same query."""

    async def dependency(
        runtime: RuntimeDep,
        session: SessionDep,
        api_key: ApiKey,
        slug: Annotated[str, Depends(_community_header)],
    ) -> PluginTarget:
        if runtime.engine.dialect.name != "postgresql":
            return PluginTarget(*await _community_for_key(session, api_key, slug, plugin))
        # Most actions write nothing: on PostgreSQL the lookup is one autocommitted statement
        # outside the request's transaction, which then costs no BEGIN and COMMIT unless the
        # action has effects to save (they then come into it: see ``save_effects``).
        async with single_statement(runtime.engine) as conn, AsyncSession(bind=conn) as lookup:
            return PluginTarget(*await _community_for_key(lookup, api_key, slug, plugin))

    return dependency


async def public_community(
    session: SessionDep, slug: Annotated[str, Depends(_community_header)]
) -> Community:
    """The community named in the header, for public routes that take no Driver key."""
    return await communities.get_community_by_slug(session, slug)


CurrentCommunity = Annotated[Community, Depends(current_community)]
PublicCommunity = Annotated[Community, Depends(public_community)]
