"""Webhook signatures: Standard Webhooks (what the gateway sends to Drivers, and accepts from
generic senders) and GitHub-style ``X-Hub-Signature-256``.

Standard Webhooks signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 under the
base64-decoded part of a ``whsec_…`` secret; the header holds space-separated ``v1,<base64>``
signatures so that, during a secret rotation, one message can carry a signature per secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The webhook's signature is missing, malformed, stale or wrong. ``reason`` is a short code
    for logs and metrics; it never contains the secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        # Secrets typed by people (the generic webhook plugin) need not be base64.
        return raw.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(
    secrets_: Iterable[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for a message."""
    ts = int(time.time()) if timestamp is None else timestamp
    signatures = " ".join(sign(s, msg_id, ts, body) for s in secrets_)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signatures}


def verify_standard(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str:
    """Check Standard Webhooks headers; returns the ``webhook-id``. ``headers`` keys lowercase."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    header = headers.get("webhook-signature")
    if not msg_id or not stamp or not header:
        raise SignatureError("missing_headers")
    try:
        ts = int(stamp)
    except ValueError:
        raise SignatureError("bad_timestamp") from None
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise SignatureError("stale_timestamp")
    expected = sign(secret, msg_id, ts, body)
    for candidate in header.split():
        if hmac.compare_digest(candidate, expected):
            return msg_id
    raise SignatureError("bad_signature")


def verify_hub_signature(secret: str, header: str | None, body: bytes) -> None:
    """Check a GitHub-style ``X-Hub-Signature-256: sha256=<hex>`` header."""
    if not header:
        raise SignatureError("missing_headers")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(header.strip(), expected):
        raise SignatureError("bad_signature")
