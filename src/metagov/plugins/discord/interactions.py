"""Discord's Interactions endpoint: checking a request is Discord's, and reading what it holds.

Discord signs ``X-Signature-Timestamp`` + the raw body with the application's Ed25519 key and
sends the signature, hex, in ``X-Signature-Ed25519``. Discord sets no window for the timestamp;
we refuse any older (or further ahead) than five minutes, so a captured request cannot be replayed
later. Discord also probes the endpoint with deliberately bad signatures, and removes an endpoint
URL that accepts them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from metagov.plugins.sdk import WebhookRejected, WebhookRequest

TOLERANCE_SECONDS = 300

# Interaction types
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
# Interaction callback types
PONG, CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, AUTOCOMPLETE_RESULT = 1, 4, 6, 8
EPHEMERAL = 1 << 6
# Application command option types that hold other options
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2


def verify(request: WebhookRequest, key: Ed25519PublicKey, *, now: float | None = None) -> None:
    """Raise :class:`WebhookRejected` unless Discord signed this request in the last five
    minutes."""
    signature = request.headers.get("x-signature-ed25519", "")
    stamp = request.headers.get("x-signature-timestamp", "")
    if not signature or not stamp:
        raise WebhookRejected("missing_headers")
    try:
        age = abs((time.time() if now is None else now) - int(stamp))
    except ValueError:
        raise WebhookRejected("bad_timestamp") from None
    if age > TOLERANCE_SECONDS:
        raise WebhookRejected("stale_timestamp")
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        raise WebhookRejected("bad_signature") from None
    try:
        key.verify(raw, stamp.encode() + request.body)
    except InvalidSignature:
        raise WebhookRejected("bad_signature") from None


def parse(webhook: WebhookRequest) -> dict[str, Any] | None:
    """The interaction a stored webhook holds, or None if it is not one."""
    try:
        body = webhook.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and isinstance(body.get("type"), int) else None


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a field of an unexpected shape is
    treated as missing rather than failing the request."""
    return value if isinstance(value, dict) else {}


def invoker(interaction: Mapping[str, Any]) -> dict[str, Any]:
    """Who used the interaction: ``member.user`` in a server, ``user`` in a DM."""
    return mapping(mapping(interaction.get("member")).get("user") or interaction.get("user"))


def component_message_id(interaction: Mapping[str, Any]) -> str | None:
    """The id of the message whose button was clicked."""
    if interaction.get("type") != MESSAGE_COMPONENT:
        return None
    found = mapping(interaction.get("message")).get("id")
    return str(found) if found else None


def command_and_options(data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A slash command's full name (``"config set"`` for a subcommand) and its options by name."""
    names = [str(data.get("name", ""))]
    options = data.get("options")
    options = options if isinstance(options, list) else []
    while (
        len(options) == 1
        and isinstance(options[0], dict)
        and options[0].get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP)
    ):
        names.append(str(options[0].get("name", "")))
        nested = options[0].get("options")
        options = nested if isinstance(nested, list) else []
    values = {
        str(o.get("name")): o.get("value")
        for o in options
        if isinstance(o, dict) and o.get("name") is not None
    }
    return " ".join(names), values
