"""``verify_event`` without a gateway: every way a delivery can be wrong. (That it accepts what
the real gateway sends is tested in test_events_and_deliveries.py.)"""

from __future__ import annotations

import json

import pytest

from metagov_client import WebhookVerificationError, sign_headers, verify_event, verify_signature

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0"
NOW = 1_795_644_910
ENVELOPE = {
    "id": "evt_7",
    "community": "my-community",
    "source": "randomness",
    "event_type": "lucky_number_changed",
    "timestamp": "1795644910.447477",
    "data": {"number": 7},
    "initiator": None,
    "seq": 3,
}
BODY = json.dumps(ENVELOPE, separators=(",", ":")).encode()


def signed(body: bytes = BODY, msg_id: str = "evt_7", secret: str = SECRET) -> dict[str, str]:
    return sign_headers(secret, msg_id, body, timestamp=NOW)


def test_a_valid_delivery_gives_the_event() -> None:
    event = verify_event(SECRET, signed(), BODY, now=NOW)
    assert event.id == "evt_7" and event.event_id == 7
    assert event.event_type == "lucky_number_changed"
    assert event.data == {"number": 7}
    assert event.seq == 3
    assert event.process is None


def test_headers_of_any_case_and_a_text_body() -> None:
    headers = {k.upper(): v for k, v in signed().items()}
    assert verify_event(SECRET, headers, BODY.decode(), now=NOW).id == "evt_7"


def test_a_known_signature() -> None:
    """The value the gateway's own signer (``metagov.signing.sign``) gives for this message."""
    headers = sign_headers(SECRET, "msg_1", b"{}", timestamp=1)
    assert headers["webhook-signature"] == "v1,41rlfKVNWsz3MR06hr4r3aQR8zCXgefWdD3LZRWu27Y="


def test_any_of_several_signatures_or_secrets() -> None:
    """During a rotation the gateway sends two signatures; a Driver may also hold two secrets."""
    rotated = signed()
    rotated["webhook-signature"] = (
        signed(secret=OLD_SECRET)["webhook-signature"] + " " + rotated["webhook-signature"]
    )
    assert verify_event(SECRET, rotated, BODY, now=NOW).id == "evt_7"
    assert verify_event([OLD_SECRET, SECRET], signed(), BODY, now=NOW).id == "evt_7"


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, BODY, "missing_headers"),
        ({k: v for k, v in signed().items() if k != "webhook-signature"}, BODY, "missing_headers"),
        ({**signed(), "webhook-timestamp": "yesterday"}, BODY, "bad_timestamp"),
        (sign_headers(SECRET, "evt_7", BODY, timestamp=NOW - 301), BODY, "stale_timestamp"),
        (sign_headers(SECRET, "evt_7", BODY, timestamp=NOW + 301), BODY, "stale_timestamp"),
        (signed(secret=OLD_SECRET), BODY, "bad_signature"),
        (signed(), BODY.replace(b"7}", b"8}"), "bad_signature"),
        ({**signed(), "webhook-id": "evt_8"}, BODY, "bad_signature"),
        ({**signed(), "webhook-signature": "v1,AAAA"}, BODY, "bad_signature"),
        (signed(b"[1, 2]"), b"[1, 2]", "bad_body"),
        (signed(b"not json"), b"not json", "bad_body"),
        (signed(msg_id="evt_8"), BODY, "id_mismatch"),
    ],
    ids=lambda value: value if isinstance(value, str) and not value.startswith("{") else "",
)
def test_a_bad_delivery_is_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(WebhookVerificationError) as refused:
        verify_event(SECRET, headers, body, now=NOW)
    assert refused.value.reason == reason
    assert isinstance(refused.value, ValueError)


def test_the_tolerance_is_adjustable() -> None:
    old = sign_headers(SECRET, "evt_7", BODY, timestamp=NOW - 3600)
    assert verify_event(SECRET, old, BODY, now=NOW, tolerance=7200).id == "evt_7"


def test_verify_signature_alone_returns_the_id() -> None:
    """For webhooks that are not Metagov events (a platform's), only the signature is checked."""
    body = b'{"anything": true}'
    assert verify_signature(SECRET, signed(body, "msg_9"), body, now=NOW) == "msg_9"


def test_a_secret_that_is_not_base64_is_used_as_text() -> None:
    """As the gateway's webhook plugin does with a secret someone typed."""
    headers = sign_headers("s3cret-s3cret!", "m", b"{}", timestamp=NOW)
    assert verify_signature("s3cret-s3cret!", headers, b"{}", now=NOW) == "m"
