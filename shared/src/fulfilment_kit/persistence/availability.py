"""What "the database does not answer" looks like, and waiting for it at start."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import structlog
from eventsourcing import persistence

log = structlog.get_logger(__name__)

T = TypeVar("T")

DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    persistence.OperationalError,
    persistence.InterfaceError,
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
    psycopg.InterfaceError,
)
"""Exceptions meaning "the database does not answer now" (not "the request is wrong")."""


def wait_for_database(
    start: Callable[[], T],
    what: str,
    timeout_s: float,
    pause_s: float = 0.5,
    max_pause_s: float = 5.0,
) -> T:
    """`start()` once the database answers: a replica (re)started during an outage comes up
    when the database is back, instead of exiting; it gives up after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return start()
        except DATABASE_UNAVAILABLE as exc:
            if time.monotonic() + pause_s > deadline:
                raise
            log.warning("database not answering at start; waiting", what=what, error=str(exc))
            time.sleep(pause_s)  # start-up only, before any loop or request runs
            pause_s = min(pause_s * 2, max_pause_s)
