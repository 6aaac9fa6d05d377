"""The dev issuer: a local key pair and secrets generated into the git-ignored state dir.

DEV ONLY. `fulfil auth token --role customer --sub <customer-id>` mints a bearer token that
the services accept while no JWKS is configured (FULFIL_AUTH_JWKS_URL/_FILE unset). Nothing
here is committed; `make clean` deletes it. In production an identity provider issues the
tokens and the services only ever see its public keys.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from fulfilment_kit.settings import AuthSettings

PRIVATE_KEY_FILE = "dev-issuer-key.pem"
JWKS_FILE = "dev-jwks.json"
DEFAULT_TTL_S = 8 * 3600


def _write_once(path: Path, content: bytes) -> bytes:
    """Create `path` with `content` unless it exists; the content that won, either way.

    Atomic (a hard link of a complete temporary file), so concurrent first runs agree.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def dev_secret(name: str, directory: Path | None = None) -> bytes:
    """A random secret generated once into the dev dir (dev only: webhooks, id derivation)."""
    directory = directory or AuthSettings().dev_dir
    return _write_once(directory / f"{name}.secret", secrets.token_hex(32).encode()).strip()


@functools.lru_cache(maxsize=8)
def _private_key(directory: Path) -> rsa.RSAPrivateKey:
    path = directory / PRIVATE_KEY_FILE
    try:
        pem = path.read_bytes()
    except FileNotFoundError:  # the first run generates it (RSA generation costs CPU)
        fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = _write_once(
            path,
            fresh.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    # RFC 7638 thumbprint of the required members: a stable kid for this key.
    members = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    kid = jwt.utils.base64url_encode(hashlib.sha256(members.encode()).digest()).decode()
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@functools.lru_cache(maxsize=8)
def _kid(directory: Path) -> str:
    return str(_public_jwk(_private_key(directory))["kid"])


def ensure_keys(directory: Path | None = None) -> Path:
    """Generate the dev key pair once; the path of its public JWKS."""
    directory = directory or AuthSettings().dev_dir
    jwks = {"keys": [_public_jwk(_private_key(directory))]}
    path = directory / JWKS_FILE
    content = json.dumps(jwks, indent=2).encode()
    if not path.exists() or path.read_bytes() != content:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_bytes(content)
        tmp.replace(path)
    return path


def mint(
    roles: Iterable[str],
    subject: str,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    settings: AuthSettings | None = None,
    **claims: Any,
) -> str:
    """A bearer token of the dev issuer for `subject` with `roles` (in the `scope` claim)."""
    settings = settings or AuthSettings()
    key = _private_key(settings.dev_dir)
    ensure_keys(settings.dev_dir)
    now = int(time.time())
    payload = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        "jti": str(uuid.uuid4()),
        "scope": " ".join(roles),
        **claims,
    }
    kid = _kid(settings.dev_dir)
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})
