"""Retry a synchronous call that failed transiently, with exponential backoff.

The one retry loop of the services' outbound gateways (payment provider, carrier, return
labels): call, and on one of the `transient` exceptions sleep `backoff_s * 2 ** (n - 1)` after
the n-th failed attempt and call again, up to `attempts` calls; the last failure is re-raised.
Any other exception propagates at once (a refusal is not retried).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
G = TypeVar("G")


def check_attempts(attempts: int) -> int:
    """`attempts` if it is at least 1 (one call and no retry), else ValueError."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    return attempts


def retry_transient(
    call: Callable[[], T],
    /,
    *,
    attempts: int,
    backoff_s: float,
    transient: tuple[type[BaseException], ...],
    sleep: Callable[[float], None] = time.sleep,
    event: str = "transient failure, retrying",
    **context: object,
) -> T:
    """The result of `call`, retrying the `transient` exceptions; logs `event` per retry.

    `context` is bound into that warning (never put personal data there).
    """
    check_attempts(attempts)
    for attempt in range(1, attempts):
        try:
            return call()
        except transient as exc:
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(event, attempt=attempt, delay=delay, error=str(exc), **context)
            sleep(delay)
    return call()


class RetryingGateway(Generic[G]):
    """Base of a gateway wrapper retrying its `inner` gateway's `transient` failures.

    A subclass names its `transient` exceptions and implements the gateway's methods as
    `self.retry(lambda: self.inner.method(...), "what failed, retrying")`.
    """

    transient: ClassVar[tuple[type[BaseException], ...]]

    def __init__(
        self,
        inner: G,
        *,
        attempts: int = 3,
        backoff_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.attempts = check_attempts(attempts)
        self.backoff_s = backoff_s
        self.sleep = sleep

    def retry(self, call: Callable[[], T], event: str) -> T:
        return retry_transient(
            call,
            attempts=self.attempts,
            backoff_s=self.backoff_s,
            transient=self.transient,
            sleep=self.sleep,
            event=event,
        )
