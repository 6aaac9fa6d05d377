"""Bearer-token authentication in the kit: forged tokens are 401, keys rotate by kid, the
JWKS comes from an identity provider's URL (a server on loopback) or the dev issuer."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from fulfilment_kit import devauth
from fulfilment_kit.http.auth import Authenticator, JwksCache, Unauthenticated
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.settings import DEV_AUDIENCE, DEV_ISSUER, AuthSettings
from orders.api import router
from orders.application import OrdersApplication
from orders.contracts import to_public
from tests.support.auth import token

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client() -> TestClient:
    runtime = ServiceRuntime(
        service="orders",
        app=OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}),
        mapper=to_public,
        output_topics=[],
    )
    return TestClient(create_http_app(runtime, routers=[router], title="orders"))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dev_kid() -> str:
    return str(json.loads(devauth.ensure_keys().read_text())["keys"][0]["kid"])


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "someone",
        "iat": now,
        "exp": now + 300,
        "scope": "ops",
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


def signed_with_dev_key(**changes: Any) -> str:
    key = serialization.load_pem_private_key(
        (AuthSettings().dev_dir / devauth.PRIVATE_KEY_FILE).read_bytes(), None
    )
    return jwt.encode(claims(**changes), key, algorithm="RS256", headers={"kid": dev_kid()})  # type: ignore[arg-type]


def unsigned_none() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": dev_kid()}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


def hs256_with_the_public_key() -> str:
    """The HS/RS confusion attack: HMAC keyed with the (public) RSA key's PEM."""
    import hashlib
    import hmac

    public = devauth._private_key(AuthSettings().dev_dir).public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": dev_kid()}).encode())
    body = b64(json.dumps(claims()).encode())
    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def signed_by_another_key() -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims(), other, algorithm="RS256", headers={"kid": dev_kid()})


def tampered() -> str:
    header, _, signature = token("customer", "alice").split(".")
    return f"{header}.{b64(json.dumps(claims(scope='ops finance')).encode())}.{signature}"


FORGED = {
    "bad signature": signed_by_another_key,
    "tampered claims": tampered,
    "wrong issuer": lambda: signed_with_dev_key(iss="https://evil.example"),
    "wrong audience": lambda: signed_with_dev_key(aud="another-api"),
    "expired": lambda: signed_with_dev_key(exp=int(time.time()) - 31),
    "no expiry": lambda: signed_with_dev_key(exp=None),
    "no subject": lambda: signed_with_dev_key(sub=None),
    "alg none": unsigned_none,
    "HS256 signed with the public key": hs256_with_the_public_key,
    "unknown kid": lambda: jwt.encode(
        claims(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "RS256",
        headers={"kid": "nope"},
    ),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
def test_forged_tokens_are_401_with_a_bearer_challenge(client: TestClient, forge: Any) -> None:
    reply = client.get(f"/orders/{uuid.uuid4()}", headers={"Authorization": f"Bearer {forge()}"})
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["www-authenticate"].startswith('Bearer realm="fulfilment", error=')
    assert reply.json()["status"] == 401


def test_a_missing_token_is_401_and_the_body_is_never_read(client: TestClient) -> None:
    reply = client.post("/orders", content=b"{not json")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="fulfilment"'
    basic = client.get(f"/orders/{uuid.uuid4()}", headers={"Authorization": "Basic b3BzOm9wcw=="})
    assert basic.status_code == 401


def test_a_valid_token_passes_and_a_little_clock_skew_is_tolerated(client: TestClient) -> None:
    for good in (token("ops"), signed_with_dev_key(exp=int(time.time()) - 10)):
        reply = client.get(f"/orders/{uuid.uuid4()}", headers={"Authorization": f"Bearer {good}"})
        assert reply.status_code == 404, reply.text


def test_health_metrics_and_the_api_description_need_no_token(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/metrics").status_code == 200
    described = client.get("/openapi.json")  # ADR 19: the description is public, data is not
    assert described.status_code == 200
    assert described.json()["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/redoc").status_code == 200
    assert client.get("/openapi.json/").status_code == 401  # exactly those paths, no prefix
    assert client.get("/docs/anything").status_code == 401


@pytest.mark.parametrize("algorithms", [["none"], ["HS256"], ["RS256", "HS512"], []])
def test_settings_refuse_symmetric_or_no_algorithms(algorithms: list[str]) -> None:
    with pytest.raises(ValidationError):
        AuthSettings(algorithms=algorithms)


def test_a_configured_jwks_needs_the_real_issuer_and_a_secret() -> None:
    with pytest.raises(ValidationError, match="ISSUER"):
        AuthSettings(jwks_url="http://127.0.0.1:1/jwks")
    with pytest.raises(ValidationError, match="IDEMPOTENCY_SECRET"):
        AuthSettings(jwks_url="http://127.0.0.1:1/jwks", issuer="https://idp.test")


def test_the_dev_issuer_can_be_forbidden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FULFIL_AUTH_DEV_ISSUER=false (the deployments' setting): no JWKS is a refusal to start,
    never a key pair generated on the pod's disk."""
    monkeypatch.setenv("FULFIL_AUTH_DEV_ISSUER", "false")
    monkeypatch.setenv("FULFIL_AUTH_DEV_DIR", str(tmp_path / "auth"))
    with pytest.raises(ValidationError, match="FULFIL_AUTH_DEV_ISSUER=false"):
        AuthSettings()
    with pytest.raises(ValidationError, match="FULFIL_AUTH_DEV_ISSUER=false"):
        Authenticator()
    assert not (tmp_path / "auth").exists()
    configured = AuthSettings(
        jwks_url="https://idp.test/jwks", issuer="https://idp.test", idempotency_secret="s" * 32
    )
    assert not configured.dev


# --- an identity provider on loopback, keys rotating by kid -----------------------------------


class Provider:
    """An identity provider: signs tokens and serves its JWKS (which keys, it decides)."""

    issuer = "https://idp.test"

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.published: list[str] = []
        self.fetches = 0

    def add_key(self, kid: str, kind: str = "RSA") -> None:
        if kind == "RSA":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        self.fetches += 1
        entries = []
        for kid in self.published:
            key = self.keys[kid]
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key())) | {"alg": "RS256"}
            else:
                jwk = json.loads(ECAlgorithm.to_jwk(key.public_key())) | {"alg": "ES256"}
            entries.append(jwk | {"kid": kid, "use": "sig"})
        return {"keys": entries}

    def token(self, kid: str, **changes: Any) -> str:
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        body = claims(iss=self.issuer, aud="fulfilment", **changes)
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


@contextlib.contextmanager
def serving(provider: Provider) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(provider.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def provider_settings(url: str, **extra: Any) -> AuthSettings:
    return AuthSettings(jwks_url=url, issuer=Provider.issuer, idempotency_secret="s" * 32, **extra)


async def test_keys_of_a_jwks_url_rotate_by_kid() -> None:
    provider = Provider()
    provider.add_key("2026-01")
    with serving(provider) as url:
        auth = Authenticator(provider_settings(url, jwks_refresh_min_s=0))
        principal = await auth.authenticate(f"Bearer {provider.token('2026-01', sub='bob')}")
        assert (principal.subject, principal.issuer, principal.roles) == (
            "bob",
            Provider.issuer,
            frozenset({"ops"}),
        )
        provider.add_key("2026-02", kind="EC")  # the provider rotates in a new (EC) key
        rotated = await auth.authenticate(f"Bearer {provider.token('2026-02')}")
        assert rotated.subject == "someone"
        assert provider.fetches == 2
        provider.published.remove("2026-01")  # and retires the old one: cached until the TTL
        assert await auth.authenticate(f"Bearer {provider.token('2026-01')}")
        with pytest.raises(Unauthenticated):  # the dev issuer's key is not the provider's
            await auth.authenticate(f"Bearer {token('ops')}")


async def test_unknown_kids_do_not_hammer_the_provider() -> None:
    provider = Provider()
    provider.add_key("k1")
    with serving(provider) as url:
        auth = Authenticator(provider_settings(url, jwks_refresh_min_s=60))
        assert await auth.authenticate(f"Bearer {provider.token('k1')}")
        provider.add_key("k2")
        for _ in range(20):
            with pytest.raises(Unauthenticated, match="signing key is unknown"):
                await auth.authenticate(f"Bearer {provider.token('k2')}")
        assert provider.fetches == 1


async def test_jwks_cache_reloads_after_its_ttl() -> None:
    now = [0.0]
    loads: list[int] = []
    provider = Provider()
    provider.add_key("k1")

    def load() -> dict[str, Any]:
        loads.append(1)
        return provider.jwks()

    cache = JwksCache(load, ttl_s=300, refresh_min_s=30, clock=lambda: now[0])
    assert await cache.key("k1") is not None
    now[0] = 100
    assert await cache.key("k1") is not None
    now[0] = 301
    assert await cache.key("k1") is not None
    assert len(loads) == 2


def test_the_readme_documents_every_auth_setting() -> None:
    readme = (REPO / "README.md").read_text()
    for name in AuthSettings.model_fields:
        assert f"FULFIL_AUTH_{name.upper()}" in readme, name
