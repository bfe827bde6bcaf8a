"""Webhook routes: where platforms post. No Driver key here; each plugin verifies its platform's
signature before anything is stored, and the platform is acknowledged only after the commit."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from metagov.api.deps import RuntimeDep
from metagov.errors import ERROR_RESPONSES
from metagov.inbox import service as inbox
from metagov.plugins.sdk import WebhookReply, WebhookRequest

router = APIRouter(prefix="/api/hooks", tags=["webhooks"], responses=ERROR_RESPONSES)

_BODY = {
    "requestBody": {
        "description": "The platform's payload, exactly as it signed it",
        "content": {"application/json": {"schema": {}}, "*/*": {"schema": {}}},
    }
}


async def _read(request: Request) -> WebhookRequest:
    return WebhookRequest(
        headers=inbox.request_headers(request.headers),
        body=await request.body(),
        query=dict(request.query_params),
    )


def _answer(reply: WebhookReply) -> Response:
    if reply.media_type == "application/json":
        return JSONResponse(reply.body, status_code=reply.status_code)
    return Response(
        str(reply.body or ""), status_code=reply.status_code, media_type=reply.media_type
    )


@router.post(
    "/{community}/{plugin}",
    operation_id="webhooks.instance",
    summary="Receive a webhook for one community's plugin instance",
    openapi_extra=_BODY,
)
async def instance_webhook(
    community: str, plugin: str, request: Request, runtime: RuntimeDep
) -> Response:
    reply = await inbox.receive(runtime, plugin, await _read(request), community_slug=community)
    return _answer(reply)


@router.post(
    "/{plugin}",
    operation_id="webhooks.platform",
    summary="Receive a webhook for a platform-wide app (Slack, GitHub App…)",
    openapi_extra=_BODY,
)
async def platform_webhook(plugin: str, request: Request, runtime: RuntimeDep) -> Response:
    return _answer(await inbox.receive(runtime, plugin, await _read(request)))
