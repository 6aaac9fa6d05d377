"""Liveness and readiness: named checks a service registers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Check = Callable[[], Awaitable[str | None]]
"""A check returns None when healthy, else a short reason."""


@dataclass
class Heartbeat:
    """A loop that must keep beating (or say it is idle) to count as alive."""

    name: str
    stale_after_s: float = 60.0
    last_beat: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def stale_for(self) -> float | None:
        age = time.monotonic() - self.last_beat
        return age if age > self.stale_after_s else None


@dataclass
class Health:
    """What /livez and /readyz report."""

    heartbeats: list[Heartbeat] = field(default_factory=list)
    readiness_checks: dict[str, Check] = field(default_factory=dict)

    def heartbeat(self, name: str, stale_after_s: float = 60.0) -> Heartbeat:
        beat = Heartbeat(name, stale_after_s)
        self.heartbeats.append(beat)
        return beat

    def liveness(self) -> dict[str, str]:
        """Problems that mean the process is wedged (never Kafka or DB being down)."""
        problems = {}
        for beat in self.heartbeats:
            stale = beat.stale_for()
            if stale is not None:
                problems[beat.name] = f"no progress for {stale:.0f}s"
        return problems

    async def readiness(self) -> dict[str, str]:
        problems = {}
        for name, check in self.readiness_checks.items():
            try:
                reason = await check()
            except Exception as exc:  # a failing check is a reason, not a crash
                reason = f"{type(exc).__name__}: {exc}"
            if reason:
                problems[name] = reason
        return problems
