"""OAuth install routes: a browser follows these, so errors before the state is trusted are JSON,
and every error after it goes back to the Driver's redirect URI."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from metagov.api.deps import RuntimeDep
from metagov.errors import ERROR_RESPONSES
from metagov.oauth import service as oauth

router = APIRouter(prefix="/auth", tags=["oauth"], responses=ERROR_RESPONSES)

Text = Annotated[str, Query(max_length=2000)]


@router.get("/{plugin}/authorize", operation_id="oauth.authorize", status_code=302)
async def authorize(
    plugin: str,
    runtime: RuntimeDep,
    community: Annotated[str, Query(max_length=64)],
    redirect_uri: Text,
    type: Annotated[str, Query(pattern="^(app|user)$")] = "app",
    state: Annotated[str | None, Query(max_length=500)] = None,
    metagov_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            description="With `type=user`: the MetagovID to link the user's account to",
        ),
    ] = None,
) -> RedirectResponse:
    """Start installing a plugin (``type=app``) or logging a user in (``type=user``); a login
    links the user's platform account to a MetagovID, returned as ``metagov_id``."""
    url = await oauth.authorize(
        runtime,
        plugin,
        kind=type,
        community=community,
        redirect_uri=redirect_uri,
        driver_state=state,
        metagov_id=metagov_id,
    )
    return RedirectResponse(url, status_code=302)


@router.get("/{plugin}/callback", operation_id="oauth.callback", status_code=302)
async def callback(
    plugin: str,
    request: Request,
    runtime: RuntimeDep,
    state: Text,
    code: Annotated[str | None, Query(max_length=500)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Where the platform sends the browser back; ends at the Driver's redirect URI. Every
    query parameter the platform sent (``installation_id``, ``guild_id``…) reaches the plugin."""
    params = {k: v[:2000] for k, v in request.query_params.items()}
    url = await oauth.callback(runtime, plugin, state_token=state, params=params)
    return RedirectResponse(url, status_code=302)
