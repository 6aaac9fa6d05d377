"""Every error as an RFC 9457 problem details response (application/problem+json).

One place maps what can go wrong in any service to its status: request validation (422),
unknown routes (404) and methods (405, with an `Allow` of every method of the path), a
database that does not answer (503 with `Retry-After`), anything unexpected (500, without
details), a concurrent write that escaped a command (409, in general terms), the
`ProblemError`s the services raise, and every command error
(`fulfilment_kit.commands.CommandError`: not found, state conflict, invalid command, a
provider refused or down) with the status and title its class names. `problem_responses()`
documents them in the OpenAPI with the problem+json content type and the `Problem` schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import psycopg
import structlog
from eventsourcing.persistence import IntegrityError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from fulfilment_kit.commands import CommandError
from fulfilment_kit.persistence.availability import DATABASE_UNAVAILABLE

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
DATABASE_RETRY_AFTER_S = 5
"""What a 503 for an unreachable database tells the caller to wait (seconds)."""
CONCURRENT_WRITE = (
    "the resource was changed by a concurrent request; read it again and retry if still wanted"
)


class FieldProblem(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="where: `lines[0].sku`, `currency`, `Idempotency-Key`...")
    message: str
    type: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details; some problems carry more members (e.g. `errors`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str = "about:blank"
    title: str
    status: int = Field(ge=100, le=599)
    detail: str
    errors: list[FieldProblem] | None = None


class ProblemError(Exception):
    """An error the API reports as it is: status, title and detail."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def not_found(what: str, identifier: object) -> ProblemError:
    return ProblemError(404, "Not found", f"{what} {identifier} does not exist")


def conflict(detail: str, **extra: Any) -> ProblemError:
    return ProblemError(409, "Conflict", detail, **extra)


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_problem = problem_response


# --- the OpenAPI side -------------------------------------------------------------------------

STANDARD_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: a bad header (e.g. X-Correlation-Id) or JSON nested too deeply",
    401: "Missing or invalid credentials",
    403: "Authenticated, but not allowed to do this",
    404: "Not found",
    405: "Method not allowed on this path (see `Allow`)",
    409: "Conflict with the current state",
    413: "Request body larger than the limit",
    415: "Unsupported media type",
    422: "Request validation failed (the `errors` name each field)",
    500: "Unexpected error (no details are given)",
    502: "An upstream provider refused the request",
    503: "A dependency is unavailable: retry after `Retry-After` seconds",
    504: "Timed out waiting",
}

COMMON_STATUSES = (400, 413, 422, 500, 503)
"""Statuses any route can answer (a bad header, a big body, bad input, a database outage)."""


def problem_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a route's problem statuses, e.g.
    `responses=problem_responses(404, 409, s409="Idempotency-Key reused")`."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = descriptions.get(f"s{status}") or STANDARD_DESCRIPTIONS.get(
            status, HTTPStatus(status).phrase
        )
        out[status] = {"model": Problem, "description": description}
    return out


def _retry_after_header() -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }
    }


def document_problems(openapi: dict[str, Any], common: Iterable[int] = COMMON_STATUSES) -> None:
    """Give every operation of `openapi` the common problem statuses and make every 4xx/5xx
    response `application/problem+json` with the `Problem` schema (FastAPI writes
    `application/json` and its own validation-error schema)."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(
        {"FieldProblem": components["Problem"].pop("$defs", {}).get("FieldProblem", {})}
    )
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path_item in openapi.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            for code in common:
                responses.setdefault(str(code), {"description": STANDARD_DESCRIPTIONS[code]})
            for key, response in responses.items():
                if not key.isdigit() or int(key) < 400:
                    continue
                if response.get("description") in ("Validation Error", "Successful Response"):
                    response["description"] = STANDARD_DESCRIPTIONS.get(int(key), "Error")
                response["content"] = {PROBLEM_JSON: {"schema": problem_ref}}
                if key == "503":
                    response["headers"] = _retry_after_header()
                if key == "405":
                    response["headers"] = {"Allow": {"schema": {"type": "string"}}}


# --- the handlers -----------------------------------------------------------------------------


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves on this request's path."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def _failed(request: Request, exc: Exception) -> dict[str, str]:
    """What the log says of a failed request: the error's class (not its message), method, path."""
    return {"error": type(exc).__name__, "method": request.method, "path": request.url.path}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IntegrityError)
    @app.exception_handler(psycopg.errors.IntegrityError)
    async def _integrity(request: Request, exc: Exception) -> JSONResponse:
        # The database's message names tables and keys: log the class, answer in general terms.
        log.info("concurrent write conflict", **_failed(request, exc))
        return _problem(409, "Conflict", CONCURRENT_WRITE)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field_path(tuple(err.get("loc", ()))),
                "message": str(err.get("msg", "invalid")).removeprefix("Value error, "),
                "type": err.get("type"),
            }
            for err in exc.errors()
        ]
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        return _problem(
            422, "Request validation failed", f"invalid fields: {fields}", errors=errors
        )

    @app.exception_handler(ProblemError)
    async def _problem_error(_: Request, exc: ProblemError) -> JSONResponse:
        return _problem(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(CommandError)
    async def _command_error(_: Request, exc: CommandError) -> JSONResponse:
        return _problem(exc.http_status, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        title = HTTPStatus(exc.status_code).phrase
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == title:
            detail = f"no resource at {request.url.path}"
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = (
                f"{request.method} is not allowed on {request.url.path}; use {headers['Allow']}"
            )
        elif detail == title:
            detail = title.lower()
        return _problem(exc.status_code, title, detail, headers=headers)

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The message of a driver error can quote SQL parameters: log the class only.
        log.warning("database unavailable", **_failed(request, exc))
        return _problem(
            503,
            "Database unavailable",
            "the service's database does not answer; retry after Retry-After seconds "
            "(a POST with the same Idempotency-Key)",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    for exc_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", **_failed(request, exc), exc_info=exc)
        return _problem(500, "Internal Server Error", "an unexpected error; it was logged")
