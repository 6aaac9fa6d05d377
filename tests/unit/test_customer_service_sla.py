"""The SLA watch on the in-memory store, with a clock the test moves."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from customer_service.application import CustomerServiceApplication
from customer_service.cases.domain import case_id_for
from customer_service.cases.sla import CASE_SLA_BREACHES, SlaWatch
from customer_service.clock import ServiceClock
from fulfilment_kit.tracing import Trace
from tests.unit.test_customer_service_policy import deliver, exception_of, published

START = datetime(2025, 6, 1, 9, tzinfo=UTC)
T = Trace("c", "c")


def make() -> tuple[CustomerServiceApplication, ServiceClock, SlaWatch]:
    clock = ServiceClock(lambda: START)
    app = CustomerServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)
    return app, clock, SlaWatch(app, clock=clock)


def breaches(app: CustomerServiceApplication) -> list[tuple[uuid.UUID, str, datetime]]:
    return [
        (e.case_id, e.sla, e.due_at)
        for e in published(app)
        if type(e).__name__ == "CaseSlaBreached"
    ]


async def test_a_passed_deadline_is_reported_once_per_sla() -> None:
    app, clock, watch = make()
    order_id = uuid.uuid4()
    deliver(app, exception_of(order_id))  # high: 4 h first response, 24 h resolution
    case_id = case_id_for("delivery_exception", order_id)
    before = CASE_SLA_BREACHES.labels("first_response", "high")._value.get()

    assert await watch.tick() == []
    clock.advance(4 * 3600 - 1)
    assert await watch.tick() == []
    clock.advance(1)
    assert await watch.tick() == [(case_id, "first_response")]
    assert await watch.tick() == []
    clock.advance(20 * 3600)
    assert await watch.tick() == [(case_id, "resolution")]
    clock.advance(100 * 3600)
    assert await watch.tick() == []

    assert breaches(app) == [
        (case_id, "first_response", START + timedelta(hours=4)),
        (case_id, "resolution", START + timedelta(hours=24)),
    ]
    assert CASE_SLA_BREACHES.labels("first_response", "high")._value.get() == before + 1
    assert app.get_case(case_id).breached == ["first_response", "resolution"]


async def test_answered_and_resolved_cases_are_not_breached() -> None:
    app, clock, watch = make()
    answered, resolved = uuid.uuid4(), uuid.uuid4()
    deliver(app, exception_of(answered), exception_of(resolved))
    app.comment_case(case_id_for("delivery_exception", answered), "ann", "on it", T)
    app.resolve_case(case_id_for("delivery_exception", resolved), "answered", None, T)
    clock.advance(5 * 3600)
    reported = await watch.tick()
    assert reported == []  # answered: first response met; resolution not due yet
    clock.advance(30 * 3600)
    assert await watch.tick() == [(case_id_for("delivery_exception", answered), "resolution")]


async def test_a_new_watch_rebuilds_from_the_log_and_does_not_repeat() -> None:
    app, clock, watch = make()
    order_id = uuid.uuid4()
    deliver(app, exception_of(order_id))
    clock.advance(5 * 3600)
    assert len(await watch.tick()) == 1
    restarted = SlaWatch(app, clock=clock)
    assert await restarted.tick() == []
    assert len(breaches(app)) == 1
