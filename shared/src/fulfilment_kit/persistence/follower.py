"""Follow a service's own notification log in-process (for local process managers)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application


class LogFollower:
    """Reads an application's notification log from the start, in order, batch by batch."""

    def __init__(self, app: Application[Any], *, topics: Sequence[str] = (), batch: int = 500):
        self.app = app
        self.topics = tuple(topics)
        self.batch = batch
        self.position = 0

    async def read(self) -> list[Any]:
        """The domain events recorded since the last read (possibly none)."""
        events: list[Any] = []
        while True:
            notifications = await asyncio.to_thread(
                self.app.recorder.select_notifications,
                self.position + 1,
                self.batch,
                None,
                self.topics,
            )
            if not notifications:
                return events
            self.position = notifications[-1].id
            events.extend(self.app.mapper.to_domain_event(n) for n in notifications)
            if len(notifications) < self.batch:
                return events
