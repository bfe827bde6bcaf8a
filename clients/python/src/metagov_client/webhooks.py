"""Standard Webhooks (https://www.standardwebhooks.com/): checking the events the gateway
delivers, and signing webhooks the way the gateway's generic ``webhook`` plugin checks them.

The scheme fits in a few lines of ``hmac``, so it is implemented here rather than pulled in as a
dependency: HMAC-SHA256, keyed with the base64-decoded part of a ``whsec_…`` secret, over
``{webhook-id}.{webhook-timestamp}.{raw body}``, sent as ``webhook-signature: v1,<base64>``
(several, space-separated, while the gateway rotates its secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping

from metagov_client.errors import WebhookVerificationError
from metagov_client.models import Event

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TOLERANCE_SECONDS = 300


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        # The gateway's webhook plugin accepts secrets people typed, which need not be base64;
        # it then uses the text itself as the key, and so must whoever signs for it.
        return raw.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(
    secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three ``webhook-*`` headers for ``body``: what a platform (or a test playing one)
    sends to the gateway's ``/api/hooks/{community}/webhook``. ``msg_id`` is the delivery id the
    gateway de-duplicates on."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify_signature(
    secret: str | Iterable[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str:
    """Check the ``webhook-*`` headers of a message; return its ``webhook-id`` or raise
    :class:`WebhookVerificationError`.

    ``headers`` may be any mapping (a dict, Starlette's, Flask's, Django's ``request.headers``);
    names are compared case-insensitively. ``body`` must be the raw body as received: parsing and
    re-serializing JSON changes the bytes. ``secret`` may be several secrets, for a Driver that
    switches to a rotated secret while old deliveries are still being retried.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing_headers")
    try:
        ts = int(stamp)
    except ValueError:
        raise WebhookVerificationError("bad_timestamp") from None
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise WebhookVerificationError("stale_timestamp")
    raw = body.encode() if isinstance(body, str) else body
    secrets = [secret] if isinstance(secret, str) else list(secret)
    expected = [sign(s, msg_id, ts, raw) for s in secrets]
    for candidate in signatures.split():
        if any(hmac.compare_digest(candidate, e) for e in expected):
            return msg_id
    raise WebhookVerificationError("bad_signature")


def verify_event(
    secret: str | Iterable[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Event:
    """Check a delivery from the gateway and return its event, or raise
    :class:`WebhookVerificationError` (answer that with 401).

    Works with any web framework: pass the request's headers and raw body (FastAPI/Starlette
    ``await request.body()``, Flask ``request.get_data()``, Django ``request.body``). Timestamps
    more than ``tolerance`` seconds from now are refused, so a captured delivery cannot be
    replayed later. Delivery is at least once: de-duplicate on the returned ``event.id``.
    """
    msg_id = verify_signature(secret, headers, body, tolerance=tolerance, now=now)
    try:
        envelope = json.loads(body)
        if not isinstance(envelope, dict):
            raise TypeError("the body is not a JSON object")
        event = Event.from_json(envelope)
    except (ValueError, KeyError, TypeError):
        raise WebhookVerificationError("bad_body") from None
    if event.id != msg_id:
        raise WebhookVerificationError("id_mismatch")
    return event
