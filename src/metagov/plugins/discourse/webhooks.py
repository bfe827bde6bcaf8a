"""Reading Discourse webhooks: the signature, the body (JSON, or the ``payload`` field of a
form-encoded delivery) and who acted."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from metagov.plugins.sdk import WebhookRequest

EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def signature_matches(secret: str, body: bytes, given: str) -> bool:
    """``X-Discourse-Event-Signature`` is ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.encode(), expected.encode())


def payload_of(webhook: WebhookRequest) -> dict[str, Any] | None:
    """The delivery's JSON object, or None if it has none. Discourse sends JSON, or a form with
    the JSON in ``payload`` when the webhook's content type is set to form-encoded."""
    try:
        if webhook.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body: Any = json.loads(webhook.form().get("payload", ""))
        else:
            body = webhook.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def event_name(webhook: WebhookRequest) -> str:
    """The ``X-Discourse-Event`` name (``post_created``, ``topic_edited``…)."""
    name = webhook.headers.get("x-discourse-event", "")
    return name if EVENT_NAME.match(name) else "unknown"


def actor(body: dict[str, Any]) -> str | None:
    """The username of whoever caused the event, wherever the payload's object keeps it."""
    for value in body.values():
        if not isinstance(value, dict):
            continue
        for key in ("created_by", "acting_user", "user"):
            nested = value.get(key)
            if isinstance(nested, dict) and isinstance(nested.get("username"), str):
                return str(nested["username"])
        if isinstance(value.get("username"), str):
            return str(value["username"])
    return None
