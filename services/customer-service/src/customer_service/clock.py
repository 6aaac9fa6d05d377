"""The service's clock: real time plus an offset that only tests move (FULFIL_TEST_CLOCK=1).

Return windows and case deadlines are measured on it, so a test can let 31 days or 5 hours
pass without waiting. In production the offset is always zero (the endpoint that moves it is
not even mounted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class ServiceClock:
    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source or (lambda: datetime.now(UTC))
        self._offset = timedelta(0)
        self._lock = threading.Lock()

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
        return self.now()

    def reset(self) -> datetime:
        """Back to real time (tests only: later tests expect a fresh clock)."""
        with self._lock:
            self._offset = timedelta(0)
        return self.now()
