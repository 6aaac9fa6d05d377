"""The service's clock: real time plus an offset that only tests move (FULFIL_TEST_CLOCK=1),
and the routes that move it.

Return windows and case deadlines are measured on it, so a test can let 31 days or 5 hours
pass without waiting. In production the offset is always zero (the endpoint that moves it is
not even mounted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from fulfilment_kit.http.auth import OPS, require
from fulfilment_kit.http.errors import not_found

log = structlog.get_logger(__name__)


class ServiceClock:
    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source or (lambda: datetime.now(UTC))
        self._offset = timedelta(0)
        self._lock = threading.Lock()
        self._on_advance: list[Callable[[], None]] = []

    def on_advance(self, callback: Callable[[], None]) -> None:
        """Call `callback` (any thread) whenever the clock is moved: loops sleeping until a
        deadline measured on this clock wake up."""
        self._on_advance.append(callback)

    def __call__(self) -> datetime:
        return self.now()

    def now(self) -> datetime:
        with self._lock:
            return self._source() + self._offset

    @property
    def offset(self) -> timedelta:
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward (never backwards: deadlines already passed stay passed)."""
        if seconds <= 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        for callback in list(self._on_advance):
            callback()
        return self.now()

    def reset(self) -> datetime:
        """Back to real time (tests only: later tests expect a fresh clock)."""
        with self._lock:
            self._offset = timedelta(0)
        return self.now()


# --- the test clock's routes (mounted only with FULFIL_TEST_CLOCK=1) -------------------------

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


async def loopback_only(request: Request) -> None:
    """The test clock answers only callers on this machine (it is for tests, never exposed)."""
    client = request.client.host if request.client else None
    if client not in LOOPBACK:
        raise not_found("route", request.url.path)


clock_router = APIRouter(
    tags=["test clock"], dependencies=[Depends(loopback_only), Depends(require(OPS))]
)


class AdvanceClockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advance_s: Annotated[float, Field(gt=0, le=10 * 365 * 86400)]


class ClockView(BaseModel):
    now: datetime
    offset_s: float


def _clock(request: Request) -> ServiceClock:
    clock = request.app.state.clock
    assert isinstance(clock, ServiceClock)
    return clock


def _clock_view(clock: ServiceClock) -> ClockView:
    return ClockView(now=clock.now(), offset_s=clock.offset.total_seconds())


@clock_router.get("/_test/clock", response_model=ClockView)
async def read_clock(request: Request) -> ClockView:
    return _clock_view(_clock(request))


@clock_router.post("/_test/clock", response_model=ClockView)
async def advance_clock(body: AdvanceClockBody, request: Request) -> ClockView:
    """Let `advance_s` seconds pass for return windows and case deadlines (tests only)."""
    clock = _clock(request)
    clock.advance(body.advance_s)
    log.warning("test clock advanced", advance_s=body.advance_s)
    return _clock_view(clock)


@clock_router.post("/_test/clock/reset", response_model=ClockView)
async def reset_clock(request: Request) -> ClockView:
    clock = _clock(request)
    clock.reset()
    log.warning("test clock reset")
    return _clock_view(clock)
