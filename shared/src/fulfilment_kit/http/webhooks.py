"""Signed webhooks in the Standard Webhooks format (HMAC-SHA256, a shared secret per sender).

The sender signs `<webhook-id>.<webhook-timestamp>.<body>` and sends the three headers
`webhook-id` (a unique delivery id), `webhook-timestamp` (Unix seconds) and
`webhook-signature` (`v1,<base64 HMAC>`, several space-separated during a secret rotation),
plus `webhook-sender` naming whose secret to check against. A receiver refuses (401) an
unsigned, wrongly signed or stale delivery (outside the timestamp window) before reading
anything else of it; it ignores a delivery id it has seen (the caller records them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SENDER_HEADER = "webhook-sender"
DEFAULT_TOLERANCE_S = 300
MAX_ID_LENGTH = 200


class InvalidWebhook(Exception):
    """The delivery is not signed by a known sender, or not now: refuse it (401)."""


@dataclass(frozen=True)
class VerifiedDelivery:
    sender: str
    delivery_id: str
    timestamp: int


def signature(secret: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of a delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: bytes, sender: str, delivery_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The headers a sender sends with `body` (for carriers' sandboxes, demos and tests)."""
    at = int(time.time()) if timestamp is None else timestamp
    return {
        SENDER_HEADER: sender,
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(at),
        SIGNATURE_HEADER: signature(secret, delivery_id, at, body),
    }


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, bytes],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: Callable[[], float] = time.time,
) -> VerifiedDelivery:
    """The delivery's sender, id and time if it is signed with the sender's secret and its
    timestamp is within `tolerance_s` of now; else InvalidWebhook (constant-time compare)."""
    sender = headers.get(SENDER_HEADER, "")
    delivery_id = headers.get(ID_HEADER, "")
    raw_timestamp = headers.get(TIMESTAMP_HEADER, "")
    offered = headers.get(SIGNATURE_HEADER, "")
    if not (sender and delivery_id and raw_timestamp and offered):
        raise InvalidWebhook(
            f"a signed delivery needs {SENDER_HEADER}, {ID_HEADER}, {TIMESTAMP_HEADER} "
            f"and {SIGNATURE_HEADER}"
        )
    secret = secrets.get(sender)
    if secret is None:
        raise InvalidWebhook("unknown webhook sender")
    if len(delivery_id) > MAX_ID_LENGTH or not delivery_id.isprintable():
        raise InvalidWebhook(f"{ID_HEADER} is invalid")
    try:
        timestamp = int(raw_timestamp)
    except ValueError as exc:
        raise InvalidWebhook(f"{TIMESTAMP_HEADER} is not Unix seconds") from exc
    if abs(now() - timestamp) > tolerance_s:
        raise InvalidWebhook(f"{TIMESTAMP_HEADER} is outside the {tolerance_s:g} s window")
    expected = signature(secret, delivery_id, timestamp, body).encode()
    matched = False
    for candidate in offered.split():
        # Compare every candidate (no early exit), each in constant time.
        matched |= hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise InvalidWebhook("the webhook signature does not match")
    return VerifiedDelivery(sender, delivery_id, timestamp)
