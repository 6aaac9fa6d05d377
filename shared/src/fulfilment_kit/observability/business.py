"""Business metrics counted from the public events a service has published.

Counting at the relay, after the Kafka transaction committed, counts each fact once: not
again when a command is replayed idempotently or a consumer retries a batch. Each service
declares its counters and says which public event moves which one (its `metrics.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import structlog
from eventsourcing.application import Application

from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.persistence.notifications import Wakeup, on_commit
from fulfilment_kit.settings import ServiceSettings

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=IntegrationEvent)


class EventMeter:
    """Observers of published public events, by event class."""

    def __init__(self) -> None:
        self._observers: dict[str, tuple[type[IntegrationEvent], list[Callable[[Any], None]]]] = {}

    def on(self, event_type: type[E], observer: Callable[[E], None]) -> None:
        """Call `observer` with each published `event_type` event."""
        entry = self._observers.setdefault(event_type.ce_type, (event_type, []))
        entry[1].append(observer)

    def observe(self, events: Iterable[IntegrationEvent]) -> None:
        """Feed the public events of one committed relay batch, as published (the relay's
        own objects: not decoded again). Never raises: metrics are not data."""
        if not self._observers:
            return
        for event in events:
            entry = self._observers.get(event.ce_type)
            if entry is None:
                continue
            try:
                for observer in entry[1]:
                    observer(event)
            except Exception as exc:
                log.warning("business metric not counted", ce_type=event.ce_type, error=str(exc))


def sampler(
    sample: Callable[[], None],
    interval_s: float = 10.0,
    *,
    changes: Application[Any] | None = None,
    idle_s: float = 50.0,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A background job that refreshes state gauges (open cases, low-stock SKUs) periodically.

    `sample` blocks (it may read the database) and runs in a worker thread; a failing round
    is logged and the next one tries again. With `changes`, the gauges derive from that
    application's events: a round runs only after its log changed (a commit's notification,
    any replica), at most every `interval_s`, and every `idle_s` regardless (an idle
    platform does not re-read what did not change).
    """

    async def run_sampler() -> None:
        wakeup = Wakeup()
        wakeup.set()  # the first round samples
        notifications = (
            on_commit(changes, wakeup.set) if changes is not None else contextlib.nullcontext()
        )
        async with notifications as notified:
            while True:
                if notified:  # only after a change (or `idle_s`), at most every `interval_s`
                    await wakeup.wait(idle_s, spacing_s=interval_s)
                try:
                    await asyncio.to_thread(sample)
                except Exception as exc:
                    log.info("metric sample skipped", error=f"{type(exc).__name__}: {exc}")
                    wakeup.set()  # try again next round
                if not notified:  # no notifications (in memory, SQLite): a plain period
                    await asyncio.sleep(interval_s)

    run_sampler.__qualname__ = f"sampler:{getattr(sample, '__qualname__', 'sample')}"
    return run_sampler


def expected_currencies() -> tuple[str, ...]:
    """Currencies whose money series exist from the start (FULFIL_METRIC_CURRENCIES, default
    EUR,USD,GBP): Prometheus cannot see the first increase of a series it never saw at 0.
    Other currencies still count; their series appear with their first order."""
    raw = ServiceSettings().metric_currencies
    return tuple(c.strip().upper() for c in raw.split(",") if len(c.strip()) == 3)
