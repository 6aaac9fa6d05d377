"""Wake-ups by LISTEN/NOTIFY (ADR 24), against the real PostgreSQL: a commit by any replica
wakes the loops of every replica; a listener that lost its connection (a database restart)
reconnects and wakes everyone, since notifications sent meanwhile are lost; the loops that
wait for due times act at the due time without a poll."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.application import Application

from fulfilment_kit.observability.business import sampler
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.persistence.notifications import Wakeup, listener_for, on_commit
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from orders.application import OrdersApplication
from orders.deadlines import DeadlineWatch
from orders.domain import Order
from shipping.application import ShippingApplication
from shipping.dispatcher import AutoDispatcher
from shipping.domain import ShipmentStatus
from shipping.gateway import SandboxCarrier
from tests.integration.test_database_outage import postgres_stopped
from tests.support.polling import eventually
from tests.unit.test_orders_lifecycle import place
from tests.unit.test_shipping_policy import Feed, paid, placed

NO_POLL_S = 300.0
"""A fallback poll no test waits for: only wake-ups and due times can make them act."""


@pytest.fixture
def replicas(database: str) -> Iterator[Callable[..., Any]]:
    made: list[Application[Any]] = []

    def make(cls: type[Any], service: str, **kwargs: Any) -> Any:
        env = eventsourcing_env(service, ServiceSettings(), PostgresSettings(dbname=database))
        made.append(cls(env=env, **kwargs))
        return made[-1]

    yield make
    for app in made:
        app.close()


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


async def _counted(counter: Counter, at_least: int, what: str) -> None:
    async def calls() -> int:
        return counter.calls

    await eventually(calls, until=lambda n: n >= at_least, timeout=20, what=what)


async def test_a_commit_by_one_replica_wakes_the_subscribers_of_the_other(
    replicas: Any,
) -> None:
    one = replicas(OrdersApplication, "orders")
    two = replicas(OrdersApplication, "orders")
    woken = Counter()
    async with on_commit(two, woken) as notified:
        assert notified
        await _counted(woken, 1, "the wake-up on connecting")
        before = woken.calls
        await asyncio.to_thread(place, one)  # committed through the other replica's pool
        await _counted(woken, before + 1, "a wake-up after the other replica's commit")
        listener = listener_for(two)
        assert listener is not None
        assert listener.connections == 1


async def test_one_listener_connection_per_process_and_database(replicas: Any) -> None:
    app = replicas(OrdersApplication, "orders")
    first, second = Counter(), Counter()
    async with on_commit(app, first), on_commit(app, second):
        await _counted(first, 1, "first subscriber connected")

        def listeners() -> int:
            with psycopg.connect(**_params(app), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'fulfil-log-notifications' "
                    "AND datname = current_database()"
                ).fetchone()
                return int(row[0]) if row else 0

        assert await asyncio.to_thread(listeners) == 1
        await asyncio.to_thread(place, app)
        await _counted(second, 2, "both subscribers woken by one notification")
        await _counted(first, 2, "both subscribers woken by one notification")
    assert listener_for(app) is None  # the last subscriber gone, the connection is closed


async def test_a_listener_whose_connection_was_killed_reconnects_and_wakes_everyone(
    replicas: Any,
) -> None:
    app = replicas(OrdersApplication, "orders")
    woken = Counter()
    async with on_commit(app, woken):
        await _counted(woken, 1, "connected")
        listener = listener_for(app)
        assert listener is not None
        await asyncio.to_thread(_terminate_listeners, app)
        await _counted(woken, 2, "the wake-up after reconnecting")
        assert listener.connections == 2
        calls = woken.calls
        await asyncio.to_thread(place, app)
        await _counted(woken, calls + 1, "notifications flow again after the reconnect")


async def test_after_a_postgresql_restart_the_listener_reconnects_and_wakes_everyone(
    replicas: Any,
) -> None:
    app = replicas(OrdersApplication, "orders")
    woken = Counter()
    async with on_commit(app, woken):
        await _counted(woken, 1, "connected")
        listener = listener_for(app)
        assert listener is not None
        await asyncio.to_thread(_restart_postgres)

        async def reconnected() -> int:
            return listener.connections

        await eventually(reconnected, until=lambda n: n >= 2, timeout=60, what="reconnected")
        assert listener.connected
        calls = woken.calls
        assert calls >= 2  # woken on reconnecting: what was committed meanwhile is read
        fresh = replicas(OrdersApplication, "orders")  # a pool without the dead connections
        await asyncio.to_thread(place, fresh)
        await _counted(woken, calls + 1, "notifications flow again after the restart")


async def test_a_wakeup_set_before_the_first_wait_is_not_lost() -> None:
    wakeup = Wakeup()
    wakeup.set()
    assert await wakeup.wait(NO_POLL_S)
    other_thread = asyncio.to_thread(wakeup.set)
    await other_thread
    assert await wakeup.wait(NO_POLL_S)


async def test_two_auto_dispatch_replicas_ship_at_the_due_time_woken_by_the_other_replica(
    replicas: Any,
) -> None:
    carrier = SandboxCarrier()
    one = replicas(ShippingApplication, "shipping", carrier=carrier)
    two = replicas(ShippingApplication, "shipping", carrier=carrier)
    dispatchers = [
        AutoDispatcher(app, after_s=0.5, fallback_s=NO_POLL_S, poll_interval_s=0.05)
        for app in (one, two)
    ]
    tasks = [asyncio.create_task(d.run()) for d in dispatchers]
    try:
        await eventually(_listening(one, two), timeout=20, what="both replicas listening")
        feed = Feed(one)  # packing starts through replica one only
        order_ids = [uuid.uuid4() for _ in range(10)]
        for order_id in order_ids:
            await asyncio.to_thread(
                feed.send, feed.message(placed(order_id)), feed.message(paid(order_id))
            )

        async def statuses() -> set[ShipmentStatus]:
            return {(await asyncio.to_thread(two.get_shipment, o)).status for o in order_ids}

        await eventually(
            statuses, until=lambda s: s == {ShipmentStatus.SHIPPED}, timeout=20, what="shipped"
        )
        assert carrier.calls == 10  # one booking per shipment, not one per replica
        shipped_at = [(await asyncio.to_thread(one.get_shipment, o)) for o in order_ids]
        assert all(s.status is ShipmentStatus.SHIPPED for s in shipped_at)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_deadline_watch_replicas_flag_at_the_deadline_without_polling(
    replicas: Any,
) -> None:
    one = replicas(OrdersApplication, "orders")
    two = replicas(OrdersApplication, "orders")
    watches = [
        DeadlineWatch(app, deadlines_s={"placed": 1.0}, interval_s=0.05, fallback_s=NO_POLL_S)
        for app in (one, two)
    ]
    tasks = [asyncio.create_task(w.run()) for w in watches]
    try:
        await eventually(_listening(one, two), timeout=20, what="both replicas listening")
        placed_at = datetime.now(UTC)
        order_ids = [await asyncio.to_thread(place, one) for _ in range(5)]

        async def flagged() -> list[bool]:
            return [any(isinstance(e, Order.Flagged) for e in one.events.get(o)) for o in order_ids]

        await eventually(flagged, until=all, timeout=20, what="every order flagged")
        assert datetime.now(UTC) - placed_at >= timedelta(seconds=1.0)
        flags = [[type(e) for e in one.events.get(o)].count(Order.Flagged) for o in order_ids]
        assert flags == [1] * 5  # once each, not once per replica
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_sampler_reads_again_only_after_a_commit_of_any_replica(replicas: Any) -> None:
    one = replicas(OrdersApplication, "orders")
    two = replicas(OrdersApplication, "orders")
    samples = Counter()
    job = sampler(samples, interval_s=0.05, changes=one, idle_s=NO_POLL_S)
    task = asyncio.create_task(job())
    try:
        await _counted(samples, 1, "the first sample")
        await eventually(_listening(one), timeout=20, what="listening")
        calls = samples.calls
        await asyncio.to_thread(place, two)  # a change made by the other replica
        await _counted(samples, calls + 1, "a sample after the change")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _listening(*apps: Application[Any]) -> Callable[[], Any]:
    async def probe() -> bool:
        found = [listener_for(app) for app in apps]
        return all(listener is not None and listener.connected for listener in found)

    return probe


def _params(app: Application[Any]) -> dict[str, Any]:
    kwargs = app.recorder.datastore.pool.kwargs  # type: ignore[attr-defined]
    return {k: v for k, v in kwargs.items() if k != "row_factory"}


def _terminate_listeners(app: Application[Any]) -> None:
    with psycopg.connect(**_params(app), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'fulfil-log-notifications' "
            "AND datname = current_database()"
        )


def _restart_postgres() -> None:
    with postgres_stopped():
        pass  # down, then up again
