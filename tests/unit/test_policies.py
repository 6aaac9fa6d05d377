"""A policy says once what it reacts to: the kit derives reacts_to, the prefetch and the topics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from fulfilment_kit.consumer_runtime import ConsumerRuntime
from fulfilment_kit.contracts import (
    OrderCancelled,
    OrderPlaced,
    PaymentFailed,
    StockLine,
    StockLocked,
    topics,
)
from fulfilment_kit.messaging.inbox import InboundMessage, ProcessApplication
from fulfilment_kit.messaging.policy import by_order, policy
from fulfilment_kit.settings import ServiceSettings
from tests.integration.tally import Tally
from tests.support.messages import inbound

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
ORDER = uuid.UUID("00000000-0000-4000-8000-000000000001")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stock_of(order_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(order_id, "stock")


class Watcher(ProcessApplication):
    prefetch = by_order()

    def __init__(self) -> None:
        super().__init__(env=POPO)
        self.seen: list[tuple[str, Any]] = []

    @policy(StockLocked)
    def _locked(self, event: StockLocked, message: InboundMessage, processing: Any) -> None:
        self.seen.append(("locked", event.order_id))

    @policy(OrderCancelled, PaymentFailed, prefetch=lambda e: [stock_of(e.order_id)])
    def _stopped(self, event: Any, message: InboundMessage, processing: Any) -> None:
        self.seen.append(("stopped", event.order_id))


def test_the_decorators_give_reacts_to_and_the_topics() -> None:
    assert set(Watcher.reacts_to) == {StockLocked, OrderCancelled, PaymentFailed}
    assert set(Watcher.subscriptions()) == {topics.INVENTORY, topics.ORDERS, topics.PAYMENTS}
    app = Watcher()
    assert app.accepts(StockLocked)
    assert not app.accepts(OrderPlaced)


def test_each_event_goes_to_its_handler_with_its_prefetch() -> None:
    app = Watcher()
    line = StockLine(sku="MUG", quantity=1)
    locked = inbound(StockLocked(order_id=ORDER, lines=[line], locked_at=NOW))
    cancelled = inbound(
        OrderCancelled(
            order_id=ORDER, customer_id=ORDER, cancelled_by="customer", reason="r", cancelled_at=NOW
        )
    )
    assert list(app.aggregate_ids(locked)) == [ORDER]  # the class's default
    assert list(app.aggregate_ids(cancelled)) == [stock_of(ORDER)]  # the handler's own
    app.handle(locked, None)  # type: ignore[arg-type]
    app.handle(cancelled, None)  # type: ignore[arg-type]
    assert app.seen == [("locked", ORDER), ("stopped", ORDER)]


def test_a_subclass_keeps_its_parents_reactions_and_adds_its_own() -> None:
    class MoreWatcher(Watcher):
        @policy(OrderPlaced)
        def _placed(self, event: OrderPlaced, message: InboundMessage, processing: Any) -> None:
            """Placed orders too."""

    assert set(MoreWatcher.reacts_to) == {StockLocked, OrderCancelled, PaymentFailed, OrderPlaced}


def test_reacting_to_one_event_type_twice_or_by_hand_is_refused() -> None:
    with pytest.raises(TypeError, match="reacts to StockLocked twice"):

        class Twice(ProcessApplication):
            @policy(StockLocked)
            def _a(self, event: StockLocked, message: InboundMessage, processing: Any) -> None:
                """One."""

            @policy(StockLocked)
            def _b(self, event: StockLocked, message: InboundMessage, processing: Any) -> None:
                """Two."""

    with pytest.raises(TypeError, match="derived"):

        class ByHand(ProcessApplication):
            reacts_to = (StockLocked,)

            @policy(StockLocked)
            def _a(self, event: StockLocked, message: InboundMessage, processing: Any) -> None:
                """One."""


def test_a_consumer_subscribed_to_a_topic_none_of_its_policies_react_to_cannot_be_built() -> None:
    process = ConsumerRuntime(service="watcher", database=database_up, settings=ServiceSettings())
    with pytest.raises(ValueError, match=r"fulfilment\.shipping\.v1"):
        process.add_consumer("watcher", Watcher(), [*Watcher.subscriptions(), topics.SHIPPING])
    assert process.consumers == []
    built = process.add_consumer("watcher", Watcher())  # its policies' topics
    assert process.consumers == [built]
    subscribed = sorted(t.name for t in built.subscriber.topics)
    assert subscribed == sorted(topics.physical(t) for t in Watcher.subscriptions())


async def database_up() -> str | None:
    return None


class Follower(ProcessApplication):
    """Loads the order's aggregate, then (found from it) the aggregate it points at."""

    prefetch = by_order()

    def __init__(self) -> None:
        super().__init__(env=POPO)
        self.prefetched_at_handle: set[uuid.UUID] = set()

    @policy(
        StockLocked,
        prefetch_then=lambda e, loaded: [stock_of(e.order_id)] if e.order_id in loaded else [],
    )
    def _locked(self, event: StockLocked, message: InboundMessage, processing: Any) -> None:
        wanted, _ = self._prefetched[id(processing)]
        self.prefetched_at_handle |= wanted


def test_a_second_prefetch_is_found_from_the_first_and_loaded_before_the_handlers() -> None:
    app = Follower()
    order, stock = Tally(id=ORDER), Tally(id=stock_of(ORDER))
    app.save(order, stock)
    line = StockLine(sku="MUG", quantity=1)
    locked = inbound(StockLocked(order_id=ORDER, lines=[line], locked_at=NOW))
    assert list(app.aggregate_ids_then(locked, {})) == []
    assert list(app.aggregate_ids_then(locked, {ORDER: order})) == [stock_of(ORDER)]
    app.process_messages([locked], Tracking("t", 1))
    assert app.prefetched_at_handle == {ORDER, stock_of(ORDER)}
