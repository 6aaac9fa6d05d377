"""Replicas that start at once on a fresh database all come up (no DDL race)."""

from __future__ import annotations

import threading

from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.persistence.follower import follower_store
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from tests.integration.tally import TallyApplication

REPLICAS = 8


def test_replicas_creating_their_tables_at_once_all_start(database: str) -> None:
    """PostgreSQL refuses concurrent CREATE ... IF NOT EXISTS of one table with "tuple
    concurrently updated": two relay replicas started together once crashed one of them."""
    env = eventsourcing_env("tally", ServiceSettings(), PostgresSettings(dbname=database))
    barrier = threading.Barrier(REPLICAS)
    failures: list[BaseException] = []
    started: list[TallyApplication] = []

    def start() -> None:
        barrier.wait()
        try:
            app = TallyApplication(env=env)
            follower_store(app).create_tables()
            started.append(app)
        except BaseException as exc:  # collected: the assertion names it
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(REPLICAS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert failures == []
        assert len(started) == REPLICAS
    finally:
        for app in started:
            app.close()
