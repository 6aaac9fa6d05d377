"""Background loops on the kit's log follower, against the real PostgreSQL.

Issue 7 defect 8 / issue 13 move 4: a loop resumes from its persisted position instead of
replaying the whole log into memory. Issue 8: with two replicas against one database each
due item is acted on once (claimed `FOR UPDATE SKIP LOCKED`), not twice.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from eventsourcing.application import Application

from customer_service.application import CustomerServiceApplication
from customer_service.cases.domain import Case, case_id_for
from customer_service.cases.sla import SlaWatch
from customer_service.clock import ServiceClock
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from orders.application import OrdersApplication
from orders.deadlines import DeadlineWatch
from orders.domain import Order
from payments.application import PaymentsApplication
from payments.domain import Payment, payment_id_for
from payments.gateway import HttpPaymentGateway
from payments.worker import ProviderWorker
from shipping.application import ShippingApplication
from shipping.dispatcher import AutoDispatcher
from shipping.domain import ShipmentStatus
from shipping.gateway import SandboxCarrier
from tests.support.card_provider import card_provider
from tests.unit.test_customer_service_policy import deliver, exception_of
from tests.unit.test_orders_lifecycle import place
from tests.unit.test_payments_policy import WORKER_SETTINGS, locked
from tests.unit.test_payments_policy import Feed as PaymentsFeed
from tests.unit.test_payments_policy import placed as order_placed
from tests.unit.test_shipping_policy import Feed, paid, placed

A = TypeVar("A", bound=Application[Any])
R = TypeVar("R")


@pytest.fixture
def replicas(database: str) -> Iterator[Callable[..., Any]]:
    """Builds application instances on one database, as the replicas of a service are."""
    made: list[Application[Any]] = []

    def make(cls: type[A], service: str, **kwargs: Any) -> A:
        env = eventsourcing_env(service, ServiceSettings(), PostgresSettings(dbname=database))
        made.append(cls(env=env, **kwargs))
        return made[-1]  # type: ignore[return-value]

    yield make
    for app in made:
        app.close()


def at_once(*rounds: Callable[[], R]) -> list[R]:
    """Run the rounds in threads released together (replicas polling at the same moment)."""
    barrier = threading.Barrier(len(rounds))
    results: list[Any] = [None] * len(rounds)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = rounds[n]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(rounds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_a_restarted_loop_resumes_from_its_stored_position(replicas: Any) -> None:
    first = replicas(OrdersApplication, "orders")
    orders = [place(first) for _ in range(30)]
    watch = DeadlineWatch(first, deadlines_s={"placed": 60.0})
    assert watch.follower.catch_up() == 30
    restarted = DeadlineWatch(replicas(OrdersApplication, "orders"), deadlines_s={"placed": 60.0})
    assert restarted.follower.position == first.recorder.max_notification_id()
    assert restarted.follower.catch_up() == 0  # nothing replayed
    assert {item.key for item in restarted.follower.items("deadline")} == {str(o) for o in orders}


def test_two_replicas_of_auto_dispatch_book_each_due_shipment_once(replicas: Any) -> None:
    carrier = SandboxCarrier()  # the one carrier both replicas call
    one = replicas(ShippingApplication, "shipping", carrier=carrier)
    two = replicas(ShippingApplication, "shipping", carrier=carrier)
    feed = Feed(one)
    order_ids = [uuid.uuid4() for _ in range(40)]
    for order_id in order_ids:
        feed.send(feed.message(placed(order_id)), feed.message(paid(order_id)))
    later = datetime.now(UTC) + timedelta(seconds=61)
    dispatchers = [AutoDispatcher(app, after_s=60, clock=lambda: later) for app in (one, two)]

    shipped = at_once(*(d.step for d in dispatchers))
    shipped += at_once(*(d.step for d in dispatchers))  # a second round finds nothing

    assert sum(shipped) == 40
    assert carrier.calls == 40  # one booking per shipment, not one per replica
    assert {one.get_shipment(o).status for o in order_ids} == {ShipmentStatus.SHIPPED}
    assert dispatchers[0].packing == {}


def test_two_replicas_of_the_deadline_watch_flag_each_overdue_order_once(
    replicas: Any,
) -> None:
    one = replicas(OrdersApplication, "orders")
    two = replicas(OrdersApplication, "orders")
    orders = [place(one) for _ in range(40)]
    later = datetime.now(UTC) + timedelta(seconds=61)
    watches = [
        DeadlineWatch(app, deadlines_s={"placed": 60.0}, clock=lambda: later) for app in (one, two)
    ]

    flagged = at_once(*(w.step for w in watches))
    flagged += at_once(*(w.step for w in watches))

    every = [order_id for round_ in flagged for order_id in round_]
    assert sorted(every) == sorted(orders)  # each flagged by exactly one replica, once
    for order_id in orders:
        events = one.events.get(order_id)
        assert [type(e) for e in events].count(Order.Flagged) == 1


def test_two_replicas_of_the_sla_watch_report_each_breach_once(replicas: Any) -> None:
    start = datetime.now(UTC)
    clock = ServiceClock(lambda: start)
    one = replicas(CustomerServiceApplication, "customer-service", clock=clock)
    two = replicas(CustomerServiceApplication, "customer-service", clock=clock)
    order_ids = [uuid.uuid4() for _ in range(20)]
    deliver(one, *(exception_of(o) for o in order_ids))  # high: 4 h to a first response
    clock.advance(4 * 3600 + 1)
    watches = [SlaWatch(app, clock=clock) for app in (one, two)]

    reported = at_once(*(w.step for w in watches))
    reported += at_once(*(w.step for w in watches))

    every = sorted(pair for round_ in reported for pair in round_)
    expected = sorted((case_id_for("delivery_exception", o), "first_response") for o in order_ids)
    assert every == expected
    for order_id in order_ids:
        events = one.events.get(case_id_for("delivery_exception", order_id))
        assert [type(e) for e in events].count(Case.SlaBreached) == 1


def test_two_replicas_of_the_payments_provider_worker_capture_each_payment_once(
    replicas: Any,
) -> None:
    """Rows are read, not claimed (a claim would hold a transaction across the provider
    call): both replicas may call for one payment, with the intent's idempotency key, so
    the provider moves the money once, and the second outcome recorded is a no-op."""
    with card_provider() as provider:
        gateways = [HttpPaymentGateway(provider.url, provider.key, timeout_s=5) for _ in "12"]
        try:
            one, two = (replicas(PaymentsApplication, "payments", gateway=g) for g in gateways)
            feed = PaymentsFeed(one, worker=False)
            order_ids = [uuid.uuid4() for _ in range(30)]
            for order_id in order_ids:
                feed.send(order_placed(order_id), locked(order_id))
            workers = [ProviderWorker(app, settings=WORKER_SETTINGS) for app in (one, two)]

            recorded = at_once(*(w.step for w in workers))
            recorded += at_once(*(w.step for w in workers))  # nothing left to call
        finally:
            for gateway in gateways:
                gateway.close()

    assert sum(recorded) == 30  # each capture recorded by exactly one replica
    assert provider.ledger.money_moves == 30  # one charge per payment, not one per replica
    assert len(provider.ledger.charges) == 30
    for order_id in order_ids:
        events = one.events.get(payment_id_for(order_id))
        assert [type(e) for e in events].count(Payment.Captured) == 1
    assert [w.open_payments() for w in workers] == [[], []]


def test_a_follower_woken_by_other_events_writes_nothing_until_one_of_its_own(
    replicas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventsourcing.utils import get_topic

    from fulfilment_kit.persistence import follower as follower_module
    from fulfilment_kit.persistence.follower import LogFollower

    app = replicas(OrdersApplication, "orders")
    seen: list[Any] = []
    flags = LogFollower(
        app, "flags", lambda events, _: seen.extend(events), topics=[get_topic(Order.Flagged)]
    )
    orders = [place(app) for _ in range(3)]
    assert flags.catch_up() == 0
    assert flags.position == 0  # only read: none of its events since
    assert app.flag_overdue(orders[1], "placed", datetime.now(UTC))
    assert flags.catch_up() == 1
    assert flags.position == app.recorder.max_notification_id()
    assert [type(e) for e in seen] == [Order.Flagged]
    # Far enough past it, the position is written even without one of its events.
    monkeypatch.setattr(follower_module, "UNWRITTEN_GAP", 2)
    place(app)
    place(app)
    assert flags.catch_up() == 0
    assert flags.position == app.recorder.max_notification_id()


def test_the_payments_worker_skips_reading_its_rows_only_while_no_replica_moved_them(
    replicas: Any,
) -> None:
    """A round catches up and reads the open calls in one transaction; with nothing new since
    its last read it reads nothing (one statement). A twin replica's catch-up moves the
    shared position, so the next round reads the rows again."""
    one, two = (replicas(PaymentsApplication, "payments") for _ in "12")
    feed = PaymentsFeed(one, worker=False)
    first, second = uuid.uuid4(), uuid.uuid4()
    feed.send(order_placed(first), locked(first))
    mine, twins = (ProviderWorker(app, settings=WORKER_SETTINGS).follower for app in (one, two))

    read = mine.follow("capture", "refund")
    assert [item.key for item in read.items or ()] == [str(payment_id_for(first))]
    assert mine.follow("capture", "refund", known=read.position).items is None

    feed.send(order_placed(second), locked(second))
    moved = twins.follow("capture", "refund")  # the twin caught up: the rows changed
    expected = {str(payment_id_for(first)), str(payment_id_for(second))}
    assert {item.key for item in moved.items or ()} == expected
    again = mine.follow("capture", "refund", known=read.position)
    assert again.items is not None
    assert {item.key for item in again.items} == expected
    assert again.position == moved.position
    assert twins.follow("capture", "refund", known=moved.position).items is None
