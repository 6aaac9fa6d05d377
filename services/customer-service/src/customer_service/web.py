"""What the returns and cases routes share: the application serving a request, the trace of
a command, and running a command off the event loop with its errors as problem+json."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Header, Request

from customer_service.application import CustomerServiceApplication
from customer_service.cases.application import CaseNotFound
from customer_service.cases.domain import InvalidCase
from customer_service.invariants import InvalidTransition
from customer_service.returns.application import OrderNotFound, ReturnNotFound
from customer_service.returns.domain import InvalidReturn, ReturnNotAllowed
from customer_service.returns.labels import LabelError, TransientLabelError
from fulfilment_kit.http import requests
from fulfilment_kit.http.errors import ProblemError, conflict, not_found
from fulfilment_kit.http.requests import wake_relay as wake_relay  # re-exported
from fulfilment_kit.idempotency import ConcurrentUpdate, IdempotencyConflict
from fulfilment_kit.tracing import Trace

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]
R = TypeVar("R")


def app_of(request: Request) -> CustomerServiceApplication:
    return requests.app_of(request, CustomerServiceApplication)


def trace_of(request: Request, cause: str, correlation_id: str | None = None) -> Trace:
    """The caller's X-Correlation-Id, else `correlation_id`; when both are missing the
    application correlates by the order (or case) the command is about."""
    return requests.trace_of(request, cause, default=correlation_id or "")


def invalid_return(exc: InvalidReturn) -> ProblemError:
    field = f"lines[{exc.line}]" if exc.line is not None else "lines"
    return ProblemError(
        422,
        "Invalid return",
        str(exc),
        errors=[{"field": field, "message": str(exc), "type": "return_line"}],
    )


async def run_command(request: Request, call: Callable[[], R], what: str, ident: object) -> R:
    """Run an application command off the event loop and translate its errors."""
    try:
        return await asyncio.to_thread(call)
    except (ReturnNotFound, CaseNotFound, OrderNotFound) as exc:
        raise not_found(what, ident) from exc
    except (InvalidTransition, ReturnNotAllowed, ConcurrentUpdate, IdempotencyConflict) as exc:
        raise conflict(str(exc)) from exc
    except InvalidReturn as exc:
        raise invalid_return(exc) from exc
    except InvalidCase as exc:
        raise ProblemError(422, "Invalid case", str(exc)) from exc
    except TransientLabelError as exc:
        raise ProblemError(
            503, "Label service unavailable", f"no return label could be created, retry: {exc}"
        ) from exc
    except LabelError as exc:
        raise ProblemError(502, "Label refused", str(exc)) from exc
