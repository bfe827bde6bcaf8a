"""Generic signed webhooks, for platforms without a dedicated plugin (an IFTTT/Zapier-style
bridge). Point the sender at ``/api/hooks/{community}/webhook`` with the configured secret.

Two signature schemes are accepted:

- Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` (within 5 minutes) and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``;
- GitHub style: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, with
  ``X-GitHub-Delivery`` as the delivery id when present.
"""

from __future__ import annotations

import json
from typing import Any

from metagov.plugins.sdk import (
    EventType,
    Plugin,
    PluginContext,
    PluginError,
    WebhookAccepted,
    WebhookRejected,
    WebhookRequest,
    WebhookScope,
    signing,
)
from metagov.plugins.webhook.schemas import WebhookConfig

DEFAULT_EVENT_TYPE = "webhook"


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


class WebhookPlugin(Plugin[WebhookConfig]):
    """Turns each verified JSON webhook into an event for the Driver."""

    name = "webhook"
    config_model = WebhookConfig
    community_platform_id_field = "source_name"
    webhooks = WebhookScope.INSTANCE
    event_types = (
        EventType(
            "webhook",
            "A verified webhook; `data` is its JSON body. With `event_type_field` (or an "
            "`X-GitHub-Event` header) the event type is the one the sender names instead.",
        ),
    )

    async def verify_webhook(
        self, request: WebhookRequest, config: WebhookConfig | None
    ) -> WebhookAccepted:
        assert config is not None  # instance webhooks always come with their config
        secret = config.secret.get_secret_value()
        try:
            if "webhook-signature" in request.headers:
                msg_id = signing.verify_standard(secret, request.headers, request.body)
                return WebhookAccepted(delivery_id=msg_id)
            signing.verify_hub_signature(
                secret, request.headers.get("x-hub-signature-256"), request.body
            )
        except signing.SignatureError as exc:
            raise WebhookRejected(exc.reason) from None
        return WebhookAccepted(delivery_id=request.headers.get("x-github-delivery"))

    async def receive_webhook(
        self, ctx: PluginContext[WebhookConfig], webhook: WebhookRequest
    ) -> None:
        try:
            body = webhook.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PluginError("the webhook body is not JSON") from None
        data = body if isinstance(body, dict) else {"payload": body}
        event_type = None
        if ctx.config.event_type_field:
            event_type = _lookup(data, ctx.config.event_type_field)
        if event_type is None:
            event_type = webhook.headers.get("x-github-event") or DEFAULT_EVENT_TYPE
        ctx.emit_event(str(event_type)[:200], data)
