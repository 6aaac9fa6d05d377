"""Key-encryption keys: they wrap (AES-256-GCM) the per-customer data keys in the key store."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fulfilment_kit.privacy.settings import PrivacySettings

__all__ = ["KeyEncryptionKeys", "generate_kek"]

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NONCE_BYTES = 12


def generate_kek(kek_id: str) -> str:
    """A new KEK entry `id=base64(32 random bytes)` for FULFIL_PRIVACY_KEKS."""
    return f"{kek_id}={base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


@dataclass(frozen=True)
class KeyEncryptionKeys:
    """The KEKs by id; `current` wraps new data keys, every one unwraps."""

    current: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, text: str) -> KeyEncryptionKeys:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for entry in filter(None, (e.strip() for e in text.replace("\n", ",").split(","))):
            kek_id, sep, encoded = entry.partition("=")
            if not sep or not _ID.match(kek_id):
                raise ValueError("a KEK entry is `id=base64key` (id: letters, digits, ._-)")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError as exc:
                raise ValueError(f"KEK {kek_id!r} is not base64") from exc
            if len(key) != 32:
                raise ValueError(f"KEK {kek_id!r} must be 32 bytes (AES-256)")
            if kek_id in keys:
                raise ValueError(f"KEK {kek_id!r} is listed twice")
            keys[kek_id] = key
            order.append(kek_id)
        if not order:
            raise ValueError("no key-encryption key given")
        return cls(current=order[0], keys=keys)

    @classmethod
    def from_settings(cls, settings: PrivacySettings) -> KeyEncryptionKeys:
        if settings.keks is not None:
            return cls.parse(settings.keks.get_secret_value())
        if settings.kek_file is not None:
            return cls.parse(settings.kek_file.read_text())
        return cls.parse(_dev_kek(settings.dev_dir))

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """(KEK id, nonce | wrapped key) of `data_key` under the current KEK."""
        nonce = os.urandom(_NONCE_BYTES)
        return self.current, nonce + AESGCM(self.keys[self.current]).encrypt(nonce, data_key, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        kek = self.keys.get(kek_id)
        if kek is None:
            raise LookupError(f"data key wrapped by unknown KEK {kek_id!r}")
        return AESGCM(kek).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], aad)


def _dev_kek(directory: Path) -> str:
    """The dev KEK, generated once into the git-ignored state dir (dev only)."""
    path = directory / "dev-kek"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".dev-kek.{os.getpid()}"
        temporary.write_text(generate_kek("dev-1") + "\n")
        temporary.chmod(0o600)
        try:
            os.link(temporary, path)  # atomic: a concurrent first start keeps the first one
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text()
