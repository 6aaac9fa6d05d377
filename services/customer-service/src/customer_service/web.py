"""What the returns and cases routes share: the application serving a request and the trace of
a command (their errors are the kit's command errors, answered as problem+json by the kit)."""

from __future__ import annotations

from fastapi import Request

from customer_service.application import CustomerServiceApplication
from fulfilment_kit.http import requests
from fulfilment_kit.tracing import Trace


def app_of(request: Request) -> CustomerServiceApplication:
    return requests.app_of(request, CustomerServiceApplication)


def trace_of(request: Request, cause: str, correlation_id: str | None = None) -> Trace:
    """The caller's X-Correlation-Id, else `correlation_id`; when both are missing the
    application correlates by the order (or case) the command is about."""
    return requests.trace_of(request, cause, default=correlation_id or "")
