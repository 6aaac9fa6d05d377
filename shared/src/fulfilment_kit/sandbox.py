"""In-memory stand-ins for outside providers (carrier, label service) in tests and demos."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

R = TypeVar("R")


class IdempotentSandbox(Generic[R]):
    """A provider without a network: the first result of an idempotency key is kept and
    returned again for that key. `fail_next` makes the next n calls raise `outage()`
    (a transient failure, for tests and demos); `calls` counts every call.
    """

    def __init__(self, outage: Callable[[], Exception], *, fail_next: int = 0) -> None:
        self.fail_next = fail_next
        self.calls = 0
        self._outage = outage
        self._results: dict[str, R] = {}
        self._lock = threading.Lock()

    def once(self, idempotency_key: str, make: Callable[[], R]) -> R:
        """The result kept for `idempotency_key`, else `make()` kept for it."""
        with self._lock:
            self.calls += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                raise self._outage()
            result = self._results.get(idempotency_key)
            if result is None:
                result = self._results[idempotency_key] = make()
            return result
