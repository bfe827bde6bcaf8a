"""FastAPI dependencies: the runtime, the request's unit of work, the Driver and its community.

Lookups that authorize a request read a snapshot (never a write lock), so a route that then calls
a platform holds nothing open meanwhile. Routes that only write to the database take
:data:`SessionDep`, one transaction committed before the response is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from metagov.db.engine import Session
from metagov.db.models import Community, Driver, PluginInstance
from metagov.errors import BadRequest, NotFound, Unauthorized
from metagov.runtime import Runtime
from metagov.tenancy import service as tenancy

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


async def get_session(runtime: RuntimeDep) -> AsyncIterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises,
    and in both cases before the response is sent, so a 2xx always means "stored". Jobs rung
    during the request are enqueued after the commit."""
    async with runtime.unit_of_work() as session:
        yield session


async def get_reader(runtime: RuntimeDep) -> AsyncIterator[Session]:
    """A session for routes that only read."""
    async with runtime.db.snapshot() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReaderDep = Annotated[Session, Depends(get_reader, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="A Driver API key from `metagov drivers create`")


async def _api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing Driver API key: send `Authorization: Bearer <key>`")
    return credentials.credentials


ApiKey = Annotated[str, Depends(_api_key)]
_INVALID_KEY = "invalid or revoked Driver API key"


async def current_driver(runtime: RuntimeDep, api_key: ApiKey) -> Driver:
    async with runtime.db.snapshot() as session:
        driver = await tenancy.authenticate(session, api_key)
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


CommunitySlug = Annotated[str, Depends(_community_header)]


async def _community_for_key(
    runtime: Runtime, api_key: str, slug: str, plugin: str | None = None
) -> tuple[Community, list[PluginInstance]]:
    """The Driver's community and its instances of ``plugin``, found with the Driver in one
    query: 401 for a bad key first, then 404 for a community the Driver cannot see."""
    async with runtime.db.snapshot() as session:
        driver, community, instances = await tenancy.get_for_key(session, api_key, slug, plugin)
    if driver is None:
        raise Unauthorized(_INVALID_KEY)
    if community is None:
        raise NotFound(f"community {slug!r} not found", code="unknown_community")
    return community, instances


async def current_community(runtime: RuntimeDep, api_key: ApiKey, slug: CommunitySlug) -> Community:
    """The Driver's community named in the header."""
    community, _ = await _community_for_key(runtime, api_key, slug)
    return community


@dataclass(frozen=True)
class PluginTarget:
    """The community a request names, with its instances of the plugin the route is for."""

    community: Community
    instances: list[PluginInstance]


def plugin_target(plugin: str) -> Callable[..., Awaitable[PluginTarget]]:
    """A dependency like :data:`CurrentCommunity` for the routes of one plugin, which also
    brings the community's instances of that plugin, in the same query."""

    async def dependency(runtime: RuntimeDep, api_key: ApiKey, slug: CommunitySlug) -> PluginTarget:
        return PluginTarget(*await _community_for_key(runtime, api_key, slug, plugin))

    return dependency


def public_target(plugin: str) -> Callable[..., Awaitable[PluginTarget]]:
    """:func:`plugin_target` for public routes, which take no Driver key."""

    async def dependency(runtime: RuntimeDep, slug: CommunitySlug) -> PluginTarget:
        async with runtime.db.snapshot() as session:
            community = await tenancy.get_community_by_slug(session, slug)
            found = await tenancy.community_plugins(session, community, plugin)
        return PluginTarget(community, found)

    return dependency


async def public_community(runtime: RuntimeDep, slug: CommunitySlug) -> Community:
    """The community named in the header, for public routes that take no Driver key."""
    async with runtime.db.snapshot() as session:
        return await tenancy.get_community_by_slug(session, slug)


CurrentCommunity = Annotated[Community, Depends(current_community)]
PublicCommunity = Annotated[Community, Depends(public_community)]
