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
        """The notification id up to which the log has been read."""

    async def read(self) -> list[Any]:
        """The domain events recorded since the last read (possibly none)."""
        return await asyncio.to_thread(self.read_sync)

    def read_sync(self) -> list[Any]:
        """`read()` for callers already off the event loop."""
        recorder = self.app.recorder
        events: list[Any] = []
        while True:
            newest = recorder.max_notification_id() or 0
            if newest <= self.position:
                return events
            notifications = recorder.select_notifications(
                self.position + 1, self.batch, stop=newest, topics=self.topics
            )
            events.extend(self.app.mapper.to_domain_event(n) for n in notifications)
            if len(notifications) < self.batch:
                self.position = newest  # nothing else of our topics up to `newest`
                return events
            self.position = notifications[-1].id
