"""Authentication (OAuth2 bearer JWTs against a JWKS) and authorisation by role.

Every route declares the roles it accepts with `require(...)`; `install_auth` puts a gate in
front of the app that answers 401 before anything else is read when the token is missing or
bad, refuses to build an app with an undeclared route, and writes the roles into the OpenAPI.
A customer is only ever served their own things: `Caller.owns(customer_id)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import jwt
import structlog
from fastapi import FastAPI, Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from jwt import PyJWK
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fulfilment_kit.http.context import header_value
from fulfilment_kit.http.errors import PROBLEM_JSON, ProblemError
from fulfilment_kit.settings import AuthSettings

log = structlog.get_logger(__name__)

CUSTOMER = "customer"
AGENT = "agent"
WAREHOUSE = "warehouse"
FINANCE = "finance"
OPS = "ops"
SERVICE = "service"
ROLES = (CUSTOMER, AGENT, WAREHOUSE, FINANCE, OPS, SERVICE)
STAFF = frozenset(ROLES) - {CUSTOMER}

PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
"""Open on every app: the probes and the metrics (the docs' paths are added per app)."""
BEARER_SCHEME = "bearerAuth"
REALM = "fulfilment"
PRINCIPAL_SCOPE_KEY = "fulfil.principal"
MAX_TOKEN_LENGTH = 8192
VERIFIED_CACHE_SIZE = 4096
VERIFIED_CACHE_S = 60.0
"""A verified token is trusted again for at most this long (and never past its expiry)."""


@dataclass(frozen=True)
class Principal:
    """Who sent the request: the token's subject, issuer and roles."""

    subject: str
    issuer: str
    roles: frozenset[str]


class Unauthenticated(Exception):
    """No usable bearer token (401). `error` is RFC 6750's code (None: no token at all)."""

    def __init__(self, description: str, error: str | None = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error

    def response(self) -> JSONResponse:
        challenge = f'Bearer realm="{REALM}"'
        if self.error:
            challenge += f', error="{self.error}", error_description="{self.description}"'
        body = {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": self.description,
        }
        return JSONResponse(
            body, status_code=401, media_type=PROBLEM_JSON, headers={"WWW-Authenticate": challenge}
        )


class AuthUnavailable(Exception):
    """The issuer's keys cannot be loaded at all: 503, try again (not the caller's fault)."""

    def response(self) -> JSONResponse:
        body = {
            "type": "about:blank",
            "title": "Authentication unavailable",
            "status": 503,
            "detail": str(self),
        }
        return JSONResponse(
            body, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": "5"}
        )


# --- the JWKS --------------------------------------------------------------------------------


def parse_jwks(document: Mapping[str, Any]) -> dict[str | None, PyJWK]:
    """The signing keys of a JWKS by kid: asymmetric keys only (an `oct` key is never used)."""
    keys: dict[str | None, PyJWK] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("unusable key in the JWKS skipped", kid=entry.get("kid"), error=str(exc))
            continue
        keys[key.key_id] = key
    return keys


class JwksCache:
    """The issuer's keys, loaded by `load` and kept `ttl_s`; an unknown kid reloads them
    (key rotation), at most once per `refresh_min_s` so forged kids cannot hammer the issuer."""

    def __init__(
        self,
        load: Callable[[], Mapping[str, Any]],
        *,
        ttl_s: float = 300.0,
        refresh_min_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.ttl_s = ttl_s
        self.refresh_min_s = refresh_min_s
        self._clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def _reload(self) -> None:
        document = await asyncio.to_thread(self._load)
        self._keys = parse_jwks(document)
        self._loaded_at = self._clock()

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key with `kid` (a token without kid: the only key of a one-key set)."""
        async with self._lock:
            now = self._clock()
            age = None if self._loaded_at is None else now - self._loaded_at
            stale = age is None or age > self.ttl_s
            rotated = age is not None and self._pick(kid) is None and age >= self.refresh_min_s
            try:
                if stale or rotated:
                    await self._reload()
            except (OSError, ValueError, httpx.HTTPError) as exc:
                log.error("JWKS could not be loaded", error=str(exc))
                if self._loaded_at is None:
                    raise AuthUnavailable("the issuer's signing keys cannot be loaded") from exc
            return self._pick(kid)

    def _pick(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


def jwks_loader(settings: AuthSettings) -> Callable[[], Mapping[str, Any]]:
    """Where the JWKS comes from: the URL, the file, or the dev issuer's generated key pair."""
    if settings.jwks_url:
        url = settings.jwks_url

        def fetch() -> Mapping[str, Any]:
            reply = httpx.get(url, timeout=5.0, follow_redirects=False)
            reply.raise_for_status()
            document: Mapping[str, Any] = reply.json()
            return document

        return fetch
    if settings.jwks_file:
        path = settings.jwks_file
    else:
        from fulfilment_kit import devauth

        log.warning("dev issuer: tokens are checked against the local dev key pair (dev only)")
        path = devauth.ensure_keys(settings.dev_dir)

    def read() -> Mapping[str, Any]:
        document: Mapping[str, Any] = json.loads(path.read_text())
        return document

    return read


# --- verifying a token -----------------------------------------------------------------------


class Authenticator:
    """Checks bearer tokens: signature (JWKS by kid, algorithm allow-list), issuer, audience,
    expiry with a small leeway; and scopes Idempotency-Keys to the caller with a secret."""

    def __init__(self, settings: AuthSettings | None = None, jwks: JwksCache | None = None):
        self.settings = settings or AuthSettings()
        self.jwks = jwks or JwksCache(
            jwks_loader(self.settings),
            ttl_s=self.settings.jwks_cache_s,
            refresh_min_s=self.settings.jwks_refresh_min_s,
        )
        self._key_secret = self._idempotency_secret()
        # token -> (principal, monotonic deadline): PyJWT spends ~1 ms of CPU per decode (its
        # base64 checks), so a client's repeated token is checked once a minute, not per call.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def _idempotency_secret(self) -> bytes:
        secret = self.settings.idempotency_secret
        if secret is not None:
            return secret.get_secret_value().encode()
        from fulfilment_kit import devauth

        return devauth.dev_secret("idempotency", self.settings.dev_dir)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("a bearer token is required", error=None)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("the token is too long")
        cached = self._verified.get(token)
        if cached is not None:
            if time.monotonic() < cached[1]:
                self._verified.move_to_end(token)
                return cached[0]
            del self._verified[token]
        principal, expires_at = await self._verify(token)
        trusted_for = min(VERIFIED_CACHE_S, expires_at + self.settings.leeway_s - time.time())
        if trusted_for > 0:
            self._verified[token] = (principal, time.monotonic() + trusted_for)
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is malformed") from exc
        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            raise Unauthenticated("the token's algorithm is not allowed")
        kid = header.get("kid")
        key = await self.jwks.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise Unauthenticated("the token's signing key is unknown")
        if key.algorithm_name != algorithm:
            raise Unauthenticated("the token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("the token is not meant for this API") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the token's issuer is not trusted") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the token's signature is invalid") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is invalid") from exc
        return _principal(claims), float(claims["exp"])

    def scoped_key(self, principal: Principal, idempotency_key: str) -> str:
        """An Idempotency-Key as this caller's own: the same (caller, key) gives the same
        value, another caller's same key another one, and nobody without the server secret
        can compute it (ids derived from it are unguessable)."""
        message = "\x1f".join((principal.issuer, principal.subject, idempotency_key))
        return hmac.new(self._key_secret, message.encode(), hashlib.sha256).hexdigest()


def _principal(claims: Mapping[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 1 <= len(subject) <= 200:
        raise Unauthenticated("the token's subject is invalid")
    granted: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        granted.update(scope.split())
    listed = claims.get("roles")
    if isinstance(listed, list):
        granted.update(r for r in listed if isinstance(r, str))
    return Principal(
        subject=subject, issuer=str(claims["iss"]), roles=frozenset(granted & set(ROLES))
    )


# --- the gate in front of the app ------------------------------------------------------------


class AuthMiddleware:
    """Authenticates every request but the public paths before the app reads anything."""

    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, public_paths: Collection[str]
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        raw = header_value(scope, b"authorization")
        try:
            principal = await self.authenticator.authenticate(
                raw.decode("latin-1") if raw else None
            )
        except (Unauthenticated, AuthUnavailable) as exc:
            await exc.response()(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of a request, as a route that accepts `allowed` sees it."""

    principal: Principal
    own_only: bool
    """A customer (and nothing else the route accepts): only their own things."""
    authenticator: Authenticator

    @property
    def subject(self) -> str:
        return self.principal.subject

    def owns(self, customer_id: uuid.UUID | str | None) -> bool:
        """May this caller see things of `customer_id`? Staff: yes; a customer: their own."""
        return not self.own_only or (
            customer_id is not None and str(customer_id) == self.principal.subject
        )

    def idempotency_key(self, key: str | None) -> str | None:
        """The Idempotency-Key scoped to this caller (see `Authenticator.scoped_key`)."""
        return None if key is None else self.authenticator.scoped_key(self.principal, key)


IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]
"""A command route's optional Idempotency-Key header (scope it with `Caller.idempotency_key`)."""


class RoleCheck:
    """A FastAPI dependency: the request's caller, if they hold one of `roles` (else 403)."""

    def __init__(self, roles: Collection[str]) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown or not roles:
            raise ValueError(f"unknown roles {sorted(unknown)}")
        self.roles = tuple(r for r in ROLES if r in roles)

    async def __call__(self, request: Request) -> Caller:
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
        authenticator = authenticator_of(request.app)
        if not isinstance(principal, Principal):  # an app without the gate (sub-apps, tests)
            principal = await authenticator.authenticate(request.headers.get("authorization"))
            request.scope[PRINCIPAL_SCOPE_KEY] = principal
        held = principal.roles & set(self.roles)
        if not held:
            raise ProblemError(
                403,
                "Forbidden",
                f"this needs one of the roles {', '.join(self.roles)}",
                required_roles=list(self.roles),
            )
        return Caller(principal, own_only=held == {CUSTOMER}, authenticator=authenticator)


def require(*roles: str) -> RoleCheck:
    """The dependency of a route that `roles` may call (a customer: only on their own)."""
    return RoleCheck(roles)


def authenticator_of(app: Any) -> Authenticator:
    found = getattr(app.state, "authenticator", None)
    if not isinstance(found, Authenticator):
        found = app.state.authenticator = Authenticator()
    return found


# --- wiring, the startup check and the OpenAPI -----------------------------------------------


def _dependency_calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


@dataclass(frozen=True)
class ApiOperation:
    """One FastAPI route as served (with the dependencies of the routers it was included by)."""

    path: str
    methods: frozenset[str]
    dependant: Dependant
    include_in_schema: bool


def api_operations(api: FastAPI) -> Iterator[ApiOperation]:
    """Every FastAPI route of `api`, with its effective dependencies."""
    for context in iter_route_contexts(api.routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        dependant = getattr(context, "dependant", None) or context.original_route.dependant
        yield ApiOperation(
            path=str(context.path_format),
            methods=frozenset(context.methods or ()),
            dependant=dependant,
            include_in_schema=bool(context.include_in_schema),
        )


def route_roles(route: ApiOperation | APIRoute) -> tuple[str, ...] | None:
    """The roles a route accepts (None: it declares none)."""
    for call in _dependency_calls(route.dependant):
        if isinstance(call, RoleCheck):
            return call.roles
    return None


def route_security(route: ApiOperation | APIRoute) -> dict[str, dict[str, Any]] | None:
    """The route's own non-bearer security schemes (e.g. a webhook signature), if any:
    a dependency with an `openapi_security_schemes` attribute {name: scheme}."""
    for call in _dependency_calls(route.dependant):
        schemes = getattr(call, "openapi_security_schemes", None)
        if schemes is not None:
            return dict(schemes)
    return None


def documentation_paths(api: FastAPI) -> frozenset[str]:
    """The API's description, open to anyone (ADR 19): the OpenAPI document and its
    Swagger UI / ReDoc pages. They say which roles each operation needs; no data."""
    paths = [api.openapi_url, api.docs_url, api.redoc_url]
    if api.docs_url and api.swagger_ui_oauth2_redirect_url:
        paths.append(api.swagger_ui_oauth2_redirect_url)
    return frozenset(p for p in paths if p)


def install_auth(
    api: FastAPI,
    *,
    public_paths: Collection[str] = (),
    authenticator: Authenticator | None = None,
) -> None:
    """Gate `api` (call after every route is added): 401 before routing without a valid
    token (except on the public paths), a startup error for a route that declares no
    roles, and the roles of each operation in the OpenAPI."""
    public = PUBLIC_PATHS | set(public_paths) | documentation_paths(api)
    authenticator = authenticator or authenticator_of(api)
    api.state.authenticator = authenticator
    for route in api_operations(api):
        if route.path in public:
            if route.path not in PUBLIC_PATHS and route_security(route) is None:
                raise RuntimeError(f"public route {route.path} has no authentication of its own")
        elif route_roles(route) is None:
            raise RuntimeError(
                f"route {sorted(route.methods)} {route.path} declares no roles: add "
                "`Depends(require(...))` (fulfilment_kit.http.auth)"
            )

    @api.exception_handler(Unauthenticated)
    async def _unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
        return exc.response()

    @api.exception_handler(AuthUnavailable)
    async def _unavailable(_: Request, exc: AuthUnavailable) -> JSONResponse:
        return exc.response()

    api.add_middleware(AuthMiddleware, authenticator=authenticator, public_paths=public)
    original = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = original()
        document_security(api, schema)
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def _problem_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    known = "Problem" in schema.get("components", {}).get("schemas", {})
    body = {"$ref": "#/components/schemas/Problem"} if known else {"type": "object"}
    return {"description": description, "content": {PROBLEM_JSON: {"schema": body}}}


def document_security(api: FastAPI, schema: dict[str, Any]) -> None:
    """Write the bearer scheme, and each operation's accepted roles, into `schema`."""
    components = schema.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": (
            "OAuth2 access token (JWT) of the configured issuer. Roles are read from the "
            f"`scope` (space-separated) and `roles` claims: {', '.join(ROLES)}. A customer "
            "token's `sub` is the customer id; a customer only sees their own orders, "
            "returns and 360 (another customer's answer 404)."
        ),
    }
    unauthorized = _problem_response(
        schema, "Missing, expired or invalid bearer token (see `WWW-Authenticate`)"
    )
    unauthorized["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    forbidden = _problem_response(
        schema, "The token holds none of the roles this operation accepts (`x-roles`)"
    )
    paths = schema.get("paths", {})
    for route in api_operations(api):
        if not route.include_in_schema:
            continue
        roles = route_roles(route)
        own = route_security(route)
        for method in route.methods:
            operation = paths.get(route.path, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if roles is not None:
                # OpenAPI 3.1: each requirement lists role names; any one of them is enough.
                operation["security"] = [{BEARER_SCHEME: [role]} for role in roles]
                operation["x-roles"] = list(roles)
                responses["401"] = unauthorized
                responses.setdefault("403", forbidden)
            elif own is not None:
                schemes.update(own)
                operation["security"] = [{name: []} for name in own]
                responses.setdefault("401", _problem_response(schema, "Unsigned or stale"))
