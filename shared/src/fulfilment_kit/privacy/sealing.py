"""The sealed form of one personal value: AES-256-GCM under its customer's data key.

`pii1:<purpose>:<customer id>:<key generation>:<base64url(nonce | ciphertext | tag)>`. The
customer id (a pseudonymous id already on every event) says which data key opens it; the
purpose says who may open it (a payments-only token, an address shipping needs). Both, with
the generation, are authenticated as associated data, so a value cannot be moved to another
customer or purpose without failing to open.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MASKED",
    "PREFIX",
    "REDACTED",
    "Purpose",
    "Sealed",
    "is_sealed",
    "open_with",
    "seal_with",
]

Purpose = Literal["contact", "payment"]
"""`contact`: name, address lines, phone, email (shipping, agents); `payment`: payments only."""

PURPOSES: tuple[Purpose, ...] = ("contact", "payment")
PREFIX = "pii1:"
REDACTED = "[erased]"
"""What every read of an erased customer's personal value shows."""
MASKED = "[personal data]"
"""What a caller whose role does not need a personal value is shown instead."""

_NONCE_BYTES = 12
_SEALED = re.compile(
    r"^pii1:(?P<purpose>contact|payment):(?P<customer>[0-9a-f-]{36}):(?P<generation>[0-9]{1,9}):"
    r"(?P<blob>[A-Za-z0-9_-]+)$"
)


@dataclass(frozen=True)
class Sealed:
    """A parsed sealed value."""

    purpose: Purpose
    customer_id: uuid.UUID
    generation: int
    blob: bytes

    @property
    def aad(self) -> bytes:
        return f"{self.purpose}:{self.customer_id}:{self.generation}".encode()


def is_sealed(value: object) -> bool:
    """True for a string in the sealed form (anything else is plaintext or not personal)."""
    return isinstance(value, str) and value.startswith(PREFIX) and _SEALED.match(value) is not None


def parse(value: str) -> Sealed:
    match = _SEALED.match(value)
    if match is None:
        raise ValueError("not a sealed value")
    blob = base64.urlsafe_b64decode(match["blob"] + "=" * (-len(match["blob"]) % 4))
    return Sealed(
        purpose=match["purpose"],  # type: ignore[arg-type]  # the pattern allows Purpose only
        customer_id=uuid.UUID(match["customer"]),
        generation=int(match["generation"]),
        blob=blob,
    )


def seal_with(
    data_key: bytes, customer_id: uuid.UUID, generation: int, purpose: Purpose, plaintext: str
) -> str:
    """Seal `plaintext` under `data_key` (a fresh random nonce each time)."""
    head = Sealed(purpose, customer_id, generation, b"")
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext.encode(), head.aad)
    blob = base64.urlsafe_b64encode(nonce + ciphertext).decode().rstrip("=")
    return f"{PREFIX}{purpose}:{customer_id}:{generation}:{blob}"


def open_with(data_key: bytes, sealed: Sealed) -> str:
    """The plaintext (raises `cryptography.exceptions.InvalidTag` if key or value is wrong)."""
    nonce, ciphertext = sealed.blob[:_NONCE_BYTES], sealed.blob[_NONCE_BYTES:]
    return AESGCM(data_key).decrypt(nonce, ciphertext, sealed.aad).decode()
