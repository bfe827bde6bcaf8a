"""OAuth install routes. A Driver obtains a signed, single-use install URL with its key; a
browser follows it, so errors before the state is trusted are JSON, and every error after it
goes back to the Driver's redirect URI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from metagov.api.deps import CurrentCommunity, RuntimeDep
from metagov.errors import ERROR_RESPONSES
from metagov.oauth import service as oauth

router = APIRouter(prefix="/auth", tags=["oauth"], responses=ERROR_RESPONSES)
internal = APIRouter(prefix="/api/internal/oauth", tags=["oauth"], responses=ERROR_RESPONSES)

Text = Annotated[str, Query(max_length=2000)]


class InstallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redirect_uri: str = Field(
        max_length=2000,
        description="Where the browser returns when the install ends; in "
        "METAGOV_AUTH_REDIRECT_ALLOWLIST",
    )
    type: Literal["app", "user"] = Field(
        "app", description="`app` installs the plugin; `user` logs a platform user in"
    )
    state: str | None = Field(
        None, max_length=500, description="Your own value, given back on the redirect"
    )
    metagov_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="With `type=user`: the MetagovID to link the user's account to",
    )


class InstallUrlOut(BaseModel):
    url: str = Field(description="Send the browser here; it works once, until `expires_at`")
    expires_at: datetime


@internal.post("/{plugin}/authorize", operation_id="oauth.install_url")
async def install_url(
    plugin: str, body: InstallRequest, runtime: RuntimeDep, community: CurrentCommunity
) -> InstallUrlOut:
    """A short-lived, single-use URL that starts installing the plugin into the community (or
    logging a platform user in) in a browser."""
    made = await oauth.install_url(
        runtime,
        plugin,
        community,
        kind=body.type,
        redirect_uri=body.redirect_uri,
        driver_state=body.state,
        metagov_id=body.metagov_id,
    )
    return InstallUrlOut(url=made.url, expires_at=made.expires_at)


@router.get("/{plugin}/authorize", operation_id="oauth.authorize", status_code=302)
async def authorize(
    plugin: str,
    runtime: RuntimeDep,
    install: Annotated[str | None, Query(max_length=2000)] = None,
) -> RedirectResponse:
    """Where an install URL leads: on to the platform. Only URLs from
    ``POST /api/internal/oauth/{plugin}/authorize`` are accepted, each once."""
    url = await oauth.authorize(runtime, plugin, install)
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
