"""The customer-service application on the in-memory store: upstream events in (as the inbox
applies them), commands, and public events out (as the relay maps them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from customer_service.application import CustomerServiceApplication
from customer_service.cases.application import OpenCase
from customer_service.cases.domain import case_id_for
from customer_service.clock import ServiceClock
from customer_service.contracts import to_public
from customer_service.invariants import InvalidTransition
from customer_service.returns.application import OrderNotFound, RequestReturn
from customer_service.returns.domain import (
    InspectedItem,
    InvalidReturn,
    ReturnNotAllowed,
    ReturnPolicy,
)
from customer_service.returns.labels import RetryingLabels, SandboxLabels, TransientLabelError
from fulfilment_kit.contracts import (
    IntegrationEvent,
    OrderCancelled,
    OrderDelivered,
    OrderFlagged,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentUnresolved,
    ShipmentException,
    ShippingAddress,
)
from fulfilment_kit.idempotency import IdempotencyConflict
from fulfilment_kit.tracing import Trace
from tests.support.messages import inbound

T = Trace("corr", "cause")
offsets = count()


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> ServiceClock:
    return ServiceClock()


@pytest.fixture
def labels() -> SandboxLabels:
    return SandboxLabels()


@pytest.fixture
def app(clock: ServiceClock, labels: SandboxLabels) -> Iterator[CustomerServiceApplication]:
    application = CustomerServiceApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
        labels=RetryingLabels(labels, attempts=2, sleep=lambda _: None),
        clock=clock,
    )
    yield application
    application.close()


def deliver(
    app: CustomerServiceApplication, *events: IntegrationEvent, ce_id: str | None = None
) -> None:
    for event in events:
        offset = next(offsets)
        app.process_messages(
            [inbound(event, offset=offset, ce_id=ce_id)], Tracking("t:any:0", offset + 1)
        )


def placed(order_id: uuid.UUID, lines: list[tuple[str, int, int]] | None = None) -> OrderPlaced:
    lines = lines or [("MUG", 3, 1299), ("TEE", 2, 2499)]
    return OrderPlaced(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku=s, quantity=q, unit_price_minor=p) for s, q, p in lines],
        currency="EUR",
        total_minor=sum(q * p for _, q, p in lines),
        shipping_address=ShippingAddress(
            recipient_name="A", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
        ),
        placed_at=datetime.now(UTC),
    )


def delivered(order: OrderPlaced, at: datetime | None = None) -> OrderDelivered:
    return OrderDelivered(
        order_id=order.order_id,
        customer_id=order.customer_id,
        delivered_at=at or datetime.now(UTC),
    )


def delivered_order(
    app: CustomerServiceApplication, lines: list[tuple[str, int, int]] | None = None
) -> OrderPlaced:
    order = placed(uuid.uuid4(), lines)
    deliver(app, order, delivered(order))
    return order


def request(
    order_id: uuid.UUID,
    lines: list[tuple[str, int]],
    reason: str = "damaged",
    key: str | None = None,
    fingerprint: str = "f",
) -> RequestReturn:
    return RequestReturn(
        order_id=order_id,
        lines=lines,
        reason_code=reason,
        comment=None,
        idempotency_key=key,
        fingerprint=fingerprint,
        trace=T,
    )


def published(app: CustomerServiceApplication) -> list[Any]:
    """The public events the relay would publish, in order."""
    out = []
    for notification in app.recorder.select_notifications(1, 10_000):
        for outbound in to_public(app.mapper.to_domain_event(notification)):
            out.append(outbound.event)
    return out


def types(app: CustomerServiceApplication) -> list[str]:
    return [type(e).__name__ for e in published(app)]


# --- the order replica -------------------------------------------------------------------------


def test_the_replica_follows_the_orders_topic_idempotently(app: CustomerServiceApplication) -> None:
    order = placed(uuid.uuid4())
    deliver(app, order)
    deliver(app, order)  # a copy at another offset
    record = app.get_order_record(order.order_id)
    assert (record.status, record.total_minor, record.version) == ("placed", 3 * 1299 + 2 * 2499, 1)
    deliver(app, delivered(order), delivered(order))
    assert app.get_order_record(order.order_id).status == "delivered"
    assert published(app) == []  # the replica is private

    cancelled = placed(uuid.uuid4())
    deliver(
        app,
        cancelled,
        OrderCancelled(
            order_id=cancelled.order_id,
            customer_id=cancelled.customer_id,
            cancelled_by="customer",
            reason="x",
            cancelled_at=datetime.now(UTC),
        ),
    )
    assert app.get_order_record(cancelled.order_id).status == "cancelled"


def test_events_of_unknown_orders_are_ignored(app: CustomerServiceApplication) -> None:
    order = placed(uuid.uuid4())
    deliver(app, delivered(order))
    with pytest.raises(OrderNotFound):
        app.get_order_record(order.order_id)


# --- returns -----------------------------------------------------------------------------------


def test_a_damaged_item_is_authorised_at_once_with_rma_and_label(
    app: CustomerServiceApplication,
) -> None:
    order = delivered_order(app)
    done = app.request_return(request(order.order_id, [("MUG", 1), ("TEE", 1)], key="k1"))
    ret = done.aggregate
    assert done.created
    assert ret.status == "authorised"
    assert ret.authorised_by == "policy"
    assert ret.rma_number is not None
    assert ret.rma_number.startswith("RMA-")
    assert ret.label.url == f"sandbox://labels/{ret.rma_number}"
    assert types(app) == ["ReturnRequested", "ReturnAuthorised"]
    requested = published(app)[0]
    assert requested.reason_code == "damaged"
    assert [(x.sku, x.quantity) for x in requested.lines] == [("MUG", 1), ("TEE", 1)]
    assert published(app)[1].rma_number == ret.rma_number

    replay = app.request_return(request(order.order_id, [("MUG", 1), ("TEE", 1)], key="k1"))
    assert (replay.created, replay.aggregate.id) == (False, ret.id)
    with pytest.raises(IdempotencyConflict):
        app.request_return(request(order.order_id, [("MUG", 2)], key="k1", fingerprint="other"))
    assert len(published(app)) == 2


def test_changed_mind_waits_for_an_agent_above_the_limit(app: CustomerServiceApplication) -> None:
    big = delivered_order(app, [("TV", 1, 20_001)])
    small = delivered_order(app, [("PEN", 2, 10_000)])
    waiting = app.request_return(request(big.order_id, [("TV", 1)], "changed_mind")).aggregate
    automatic = app.request_return(request(small.order_id, [("PEN", 1)], "changed_mind")).aggregate
    other = app.request_return(request(small.order_id, [("PEN", 1)], "other")).aggregate
    assert (waiting.status, automatic.status, other.status) == (
        "requested",
        "authorised",
        "requested",
    )
    authorised = app.authorise_return(waiting.id, "ann", T)
    assert (authorised.status, authorised.authorised_by) == ("authorised", "ann")
    with pytest.raises(InvalidTransition):
        app.authorise_return(waiting.id, "ann", T)
    rejected = app.reject_return(other.id, "outside the policy", "ann", T)
    assert rejected.status == "rejected"
    with pytest.raises(InvalidTransition):
        app.reject_return(other.id, "again", "ann", T)
    # the rejected unit can be asked for again
    assert app.get_order_record(small.order_id).returnable("PEN") == 1
    assert types(app)[-2:] == ["ReturnAuthorised", "ReturnRejected"]


def test_refusals_record_nothing(app: CustomerServiceApplication, clock: ServiceClock) -> None:
    undelivered = placed(uuid.uuid4())
    deliver(app, undelivered)
    order = delivered_order(app)
    before = app.recorder.max_notification_id()
    with pytest.raises(OrderNotFound):
        app.request_return(request(uuid.uuid4(), [("MUG", 1)]))
    with pytest.raises(ReturnNotAllowed, match="is not delivered"):
        app.request_return(request(undelivered.order_id, [("MUG", 1)]))
    with pytest.raises(InvalidReturn, match="HAT is not in order"):
        app.request_return(request(order.order_id, [("HAT", 1)]))
    with pytest.raises(InvalidReturn, match="4 units of MUG"):
        app.request_return(request(order.order_id, [("MUG", 4)]))
    clock.advance(31 * 86400)
    with pytest.raises(ReturnNotAllowed, match="return window"):
        app.request_return(request(order.order_id, [("MUG", 1)]))
    assert app.recorder.max_notification_id() == before


def test_a_label_outage_records_nothing_and_a_retry_succeeds(
    app: CustomerServiceApplication, labels: SandboxLabels
) -> None:
    order = delivered_order(app)
    before = app.recorder.max_notification_id()
    labels.fail_next = 2
    with pytest.raises(TransientLabelError):
        app.request_return(request(order.order_id, [("MUG", 1)], key="retry-me"))
    assert app.recorder.max_notification_id() == before
    assert app.request_return(request(order.order_id, [("MUG", 1)], key="retry-me")).created


def test_receipt_refunds_by_policy_and_counts_returned_units(
    app: CustomerServiceApplication,
) -> None:
    order = delivered_order(app)
    ret = app.request_return(request(order.order_id, [("MUG", 2), ("TEE", 1)], "changed_mind"))
    return_id = ret.aggregate.id
    with pytest.raises(InvalidReturn, match="1 units of MUG inspected, 2 were authorised"):
        app.receive_return(return_id, [InspectedItem("MUG", 1, "restockable")], T)
    received = app.receive_return(
        return_id,
        [InspectedItem("MUG", 2, "restockable"), InspectedItem("TEE", 1, "damaged")],
        T,
    )
    assert received.refund_minor == 2 * 1299  # changed mind: a damaged unit refunds 0 %
    with pytest.raises(InvalidTransition, match="already received"):
        app.receive_return(return_id, [InspectedItem("MUG", 2, "restockable")], T)
    record = app.get_order_record(order.order_id)
    assert record.returned == {"MUG": 2, "TEE": 1}
    assert record.returnable("MUG") == 1
    event = published(app)[-1]
    assert type(event).__name__ == "ReturnReceived"
    assert (event.refund_minor, event.currency, event.rma_number) == (
        2 * 1299,
        "EUR",
        received.rma_number,
    )
    assert [(x.sku, x.quantity, x.result) for x in event.lines] == [
        ("MUG", 2, "restockable"),
        ("TEE", 1, "damaged"),
    ]
    assert [r.id for r in app.list_returns(order.order_id)] == [return_id]
    assert app.list_returns(uuid.uuid4()) == []


def test_damaged_refund_percentage_is_configurable(clock: ServiceClock) -> None:
    app = CustomerServiceApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
        return_policy=ReturnPolicy(damaged_refund_percent=50, auto_approve_max_minor=10**9),
        clock=clock,
    )
    order = delivered_order(app)
    ret = app.request_return(request(order.order_id, [("TEE", 1)], "changed_mind")).aggregate
    received = app.receive_return(ret.id, [InspectedItem("TEE", 1, "damaged")], T)
    assert received.refund_minor == 2499 // 2


def test_receipt_of_a_waiting_or_rejected_return_is_refused(
    app: CustomerServiceApplication,
) -> None:
    order = delivered_order(app, [("TV", 1, 50_000)])
    ret = app.request_return(request(order.order_id, [("TV", 1)], "other")).aggregate
    with pytest.raises(InvalidTransition, match="it is requested"):
        app.receive_return(ret.id, [InspectedItem("TV", 1, "restockable")], T)


# --- cases opened by upstream events -----------------------------------------------------------


def exception_of(order_id: uuid.UUID) -> ShipmentException:
    return ShipmentException(
        order_id=order_id,
        shipment_id=uuid.uuid4(),
        reason_code="lost",
        reason="the carrier lost the parcel",
        occurred_at=datetime.now(UTC),
    )


def test_upstream_problems_open_one_case_each(
    app: CustomerServiceApplication, clock: ServiceClock
) -> None:
    order = placed(uuid.uuid4())
    deliver(app, order)
    exception = exception_of(order.order_id)
    ce_id = str(uuid.uuid4())
    deliver(app, exception, ce_id=ce_id)
    deliver(app, exception, ce_id=ce_id)  # redelivered at another offset
    deliver(app, exception_of(order.order_id))  # a second report: same cause, same case
    failed = PaymentFailed(
        order_id=order.order_id,
        payment_id=uuid.uuid4(),
        reason_code="card_declined",
        amount_minor=100,
        currency="EUR",
        failed_at=datetime.now(UTC),
    )
    now = datetime.now(UTC)
    flagged = OrderFlagged(
        order_id=order.order_id,
        customer_id=order.customer_id,
        stage="placed",
        stage_entered_at=now - timedelta(minutes=5),
        deadline_at=now - timedelta(minutes=3),
        flagged_at=now,
    )
    deliver(app, failed, flagged, failed, flagged)

    cases = app.list_cases(order_id=order.order_id)
    assert sorted((c.kind, c.priority) for c in cases) == [
        ("delivery_exception", "high"),
        ("payment_problem", "normal"),
        ("stuck_order", "high"),
    ]
    exception_case = app.get_case(case_id_for("delivery_exception", order.order_id))
    assert exception_case.customer_id == order.customer_id  # from the order replica
    assert "lost" in exception_case.summary
    assert exception_case.first_response_due_at - exception_case.opened_at == timedelta(hours=4)
    assert exception_case.resolution_due_at - exception_case.opened_at == timedelta(hours=24)

    opened = [e for e in published(app) if type(e).__name__ == "CaseOpened"]
    assert len(opened) == 3
    assert {e.kind for e in opened} == {"delivery_exception", "payment_problem", "stuck_order"}
    assert all(e.order_id == order.order_id for e in opened)


def test_a_cause_opens_a_second_case_once_the_first_one_is_closed(
    app: CustomerServiceApplication,
) -> None:
    order = placed(uuid.uuid4())
    deliver(app, order)
    first_report = str(uuid.uuid4())
    deliver(app, exception_of(order.order_id), ce_id=first_report)
    first = app.get_case(case_id_for("delivery_exception", order.order_id))
    app.resolve_case(first.id, "replaced", "sent a new parcel", T)
    app.close_case(first.id, T)

    deliver(app, exception_of(order.order_id), ce_id=first_report)  # a redelivery: no new case
    assert len(app.list_cases(order_id=order.order_id)) == 1
    second_report = str(uuid.uuid4())
    deliver(app, exception_of(order.order_id), ce_id=second_report)  # lost again: a new case
    deliver(app, exception_of(order.order_id), ce_id=second_report)
    deliver(app, exception_of(order.order_id))  # while the second one is open: the same case

    cases = app.list_cases(order_id=order.order_id)
    assert [(c.kind, c.status) for c in cases] == [
        ("delivery_exception", "closed"),
        ("delivery_exception", "open"),
    ]
    assert cases[1].id == case_id_for("delivery_exception", order.order_id, 1)
    opened = [e for e in published(app) if type(e).__name__ == "CaseOpened"]
    assert len(opened) == 2


def test_cases_use_the_service_clock(app: CustomerServiceApplication, clock: ServiceClock) -> None:
    clock.advance(3600)
    order_id = uuid.uuid4()
    deliver(app, exception_of(order_id))
    case = app.get_case(case_id_for("delivery_exception", order_id))
    assert case.opened_at - datetime.now(UTC) > timedelta(minutes=59)


# --- agents' commands on cases -----------------------------------------------------------------


def open_manual(app: CustomerServiceApplication, key: str | None = None, fp: str = "f") -> Any:
    return app.open_case(
        OpenCase(
            kind="inquiry",
            priority="urgent",
            summary="where is my parcel?",
            order_id=None,
            customer_id=uuid.uuid4(),
            idempotency_key=key,
            fingerprint=fp,
            trace=T,
        )
    )


def test_manual_case_lifecycle_and_filters(app: CustomerServiceApplication) -> None:
    first = open_manual(app, key="c1")
    assert first.created
    assert open_manual(app, key="c1").created is False
    with pytest.raises(IdempotencyConflict):
        open_manual(app, key="c1", fp="other")
    other = open_manual(app).aggregate
    case_id = first.aggregate.id

    app.assign_case(case_id, "ann", T)
    app.comment_case(case_id, "ann", "looking into it", T)
    assert [c.id for c in app.list_cases(assignee="ann")] == [case_id]
    assert [c.id for c in app.list_cases(status="open")] == [other.id]
    assert [c.id for c in app.list_cases(status="in_progress", kind="inquiry")] == [case_id]
    resolved = app.resolve_case(case_id, "answered", "it is on its way", T)
    assert resolved.status == "resolved"
    closed = app.close_case(case_id, T)
    assert closed.status == "closed"
    assert [c.id for c in app.list_cases(status="closed")] == [case_id]
    assert types(app) == ["CaseOpened", "CaseOpened", "CaseResolved"]
    resolved_event = published(app)[-1]
    assert (resolved_event.outcome, resolved_event.note) == ("answered", "it is on its way")
    assert resolved_event.customer_id == first.aggregate.customer_id


def test_a_payment_unresolved_past_the_deadline_opens_one_payment_problem_case(
    app: CustomerServiceApplication,
) -> None:
    """Issue 7, defect 2: an unknown capture outcome becomes a case for a human."""
    order = placed(uuid.uuid4())
    deliver(app, order)
    now = datetime.now(UTC)
    unresolved = PaymentUnresolved(
        order_id=order.order_id,
        payment_id=uuid.uuid4(),
        amount_minor=2500,
        currency="EUR",
        unknown_since=now - timedelta(minutes=6),
        lookups=8,
        flagged_at=now,
    )
    deliver(app, unresolved, unresolved)
    [case] = app.list_cases(order_id=order.order_id)
    assert (case.kind, case.priority) == ("payment_problem", "high")
    assert case.customer_id == order.customer_id
    assert "unknown" in case.summary
