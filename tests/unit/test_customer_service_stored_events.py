"""Events stored before returns and cases moved into their own packages still load: their
topics and value types name `customer_service.domain` (recorded from that code)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from customer_service.application import CustomerServiceApplication
from customer_service.cases.domain import Case, CaseStatus, SlaPolicy
from customer_service.contracts import to_public
from customer_service.returns.domain import (
    OrderedLine,
    OrderRecord,
    ReturnItem,
    order_record_id,
)
from fulfilment_kit.contracts import CaseOpened
from fulfilment_kit.tracing import Trace
from tests.support.stored_events import load, with_stored

ORDER_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
CUSTOMER_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")
RETURN_ID = uuid.UUID("33333333-3333-4333-8333-333333333333")
CASE_ID = uuid.UUID("44444444-4444-4444-8444-444444444444")

STORED = load(Path(__file__).parent / "customer_service_stored_events.json")
"""(originator id, version, topic, state) of each event as the code before the move stored it."""


def _app_with_old_events() -> CustomerServiceApplication:
    app = CustomerServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return with_stored(app, STORED)


def test_an_order_record_stored_in_the_old_module_loads() -> None:
    app = _app_with_old_events()
    record = app.repository.get(order_record_id(ORDER_ID))
    assert isinstance(record, OrderRecord)
    assert record.customer_id == CUSTOMER_ID
    assert record.delivered_at == datetime(2025, 5, 1, 12, tzinfo=UTC)
    assert record.open_returns == {str(RETURN_ID): [ReturnItem("SKU-1", 1, 1500)]}
    assert record.returnable("SKU-1") == 1


def test_a_case_stored_in_the_old_module_loads_is_listed_and_maps_to_its_public_event() -> None:
    app = _app_with_old_events()
    case = app.get_case(CASE_ID)
    assert isinstance(case, Case)
    assert case.status is CaseStatus.IN_PROGRESS
    assert [note.text for note in case.notes] == ["on it"]
    assert case.opened_by == "cause-4"  # version 1 named it only in its trace
    assert [c.id for c in app.list_cases(order_id=ORDER_ID)] == [CASE_ID]
    first = app.mapper.to_domain_event(app.recorder.select_events(CASE_ID, lte=1)[0])
    [outbound] = to_public(first)
    assert isinstance(outbound.event, CaseOpened)
    assert outbound.event.case_id == CASE_ID
    assert outbound.correlation_id == "corr"


def test_events_recorded_now_have_the_stored_names_and_fields() -> None:
    """The same story recorded by today's code: each event's name and fields (and `trace`)
    as stored before, Case.Opened as version 2 with `opened_by`."""
    old = _app_with_old_events()
    new = CustomerServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    trace = Trace("corr", "cause")
    record = OrderRecord.place(
        order_id=ORDER_ID,
        customer_id=CUSTOMER_ID,
        lines=[OrderedLine("SKU-1", 2, 1500)],
        currency="EUR",
    )
    record.deliver(datetime(2025, 5, 1, 12, tzinfo=UTC))
    record.open_return(RETURN_ID, [ReturnItem("SKU-1", 1, 1500)])
    case = Case.open(
        case_id=CASE_ID,
        kind="inquiry",
        priority="normal",
        summary="where is it",
        order_id=ORDER_ID,
        customer_id=CUSTOMER_ID,
        opened_at=datetime(2025, 5, 2, 9, tzinfo=UTC),
        sla=SlaPolicy(),
        opened_by="cause-4",
    )
    case.comment("agent", "on it", datetime(2025, 5, 2, 10, tzinfo=UTC))
    new.save(record, case, trace=trace)

    def shape(app: CustomerServiceApplication) -> list[tuple[str, set[str]]]:
        return [
            (n.topic.rpartition(":")[2], set(json.loads(n.state)))
            for n in app.recorder.select_notifications(1, 10)
        ]

    expected = shape(old)
    expected[3][1].update({"opened_by", "class_version"})
    assert shape(new) == expected
