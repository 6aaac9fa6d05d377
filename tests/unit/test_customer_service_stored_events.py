"""Events stored before returns and cases moved into their own packages still load: their
topics and value types name `customer_service.domain` (recorded from that code)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from eventsourcing.persistence import StoredEvent

from customer_service.application import CustomerServiceApplication
from customer_service.cases.domain import Case, CaseStatus
from customer_service.contracts import to_public
from customer_service.returns.domain import OrderRecord, ReturnItem, order_record_id
from fulfilment_kit.contracts import CaseOpened

ORDER_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
CUSTOMER_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")
RETURN_ID = uuid.UUID("33333333-3333-4333-8333-333333333333")
CASE_ID = uuid.UUID("44444444-4444-4444-8444-444444444444")

STORED = json.loads((Path(__file__).parent / "customer_service_stored_events.json").read_text())
"""(originator id, version, topic, state) of each event as the code before the move stored it."""


def _app_with_old_events() -> CustomerServiceApplication:
    app = CustomerServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.recorder.insert_events(
        [
            StoredEvent(uuid.UUID(oid), version, topic, state.encode())
            for oid, version, topic, state in STORED
        ]
    )
    return app


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
    assert [c.id for c in app.list_cases(order_id=ORDER_ID)] == [CASE_ID]
    first = app.mapper.to_domain_event(app.recorder.select_events(CASE_ID, lte=1)[0])
    [outbound] = to_public(first)
    assert isinstance(outbound.event, CaseOpened)
    assert outbound.event.case_id == CASE_ID
    assert outbound.correlation_id == "corr"
