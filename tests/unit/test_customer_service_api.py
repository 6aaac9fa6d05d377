"""The customer-service HTTP API on the in-memory store (no Kafka: the lifespan is not started)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from customer_service.api import router
from customer_service.application import CustomerServiceApplication
from customer_service.cases.domain import case_id_for
from customer_service.clock import ServiceClock, clock_router
from customer_service.contracts import to_public
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from tests.support.auth import as_role, staff_headers
from tests.unit.test_customer_service_policy import (
    deliver,
    delivered_order,
    exception_of,
    placed,
    published,
)


@pytest.fixture
def clock() -> ServiceClock:
    return ServiceClock()


@pytest.fixture
def app(clock: ServiceClock) -> CustomerServiceApplication:
    return CustomerServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)


def client_for(
    app: CustomerServiceApplication, clock: ServiceClock, test_clock: bool
) -> TestClient:
    runtime = ServiceRuntime(
        service="customer-service", app=app, mapper=to_public, output_topics=[]
    )
    routers = [router, clock_router] if test_clock else [router]
    api = create_http_app(runtime, routers=routers, title="customer-service")
    api.state.clock = clock
    return TestClient(api, headers=staff_headers(), client=("127.0.0.1", 50000))


@pytest.fixture
def client(app: CustomerServiceApplication, clock: ServiceClock) -> TestClient:
    return client_for(app, clock, test_clock=True)


def ask(
    client: TestClient,
    order_id: Any,
    lines: list[tuple[str, int]],
    reason: str = "damaged",
    **kw: Any,
) -> Any:
    body = {
        "order_id": str(order_id),
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
        "reason_code": reason,
        **kw,
    }
    return client.post("/returns", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})


def test_return_flow_over_http(client: TestClient, app: CustomerServiceApplication) -> None:
    order = delivered_order(app)
    key = {"Idempotency-Key": "ret-1"}
    body = {
        "order_id": str(order.order_id),
        "lines": [{"sku": "MUG", "quantity": 1}, {"sku": "TEE", "quantity": 1}],
        "reason_code": "damaged",
        "comment": "the mug is chipped",
    }
    created = client.post("/returns", json=body, headers=key)
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["status"] == "authorised"
    assert view["reason"] == "the mug is chipped"
    assert view["label"]["url"] == f"sandbox://labels/{view['rma_number']}"
    assert created.headers["Location"] == f"/returns/{view['return_id']}"
    replay = client.post("/returns", json=body, headers=key)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["return_id"] == view["return_id"]
    clash = client.post("/returns", json={**body, "reason_code": "wrong_item"}, headers=key)
    assert clash.status_code == 409

    receipt = {
        "lines": [
            {"sku": "MUG", "quantity": 1, "result": "restockable"},
            {"sku": "TEE", "quantity": 1, "result": "damaged"},
        ]
    }
    received = client.post(f"/returns/{view['return_id']}/receipt", json=receipt)
    assert received.status_code == 200, received.text
    assert received.json()["refund_minor"] == 1299 + 2499
    again = client.post(f"/returns/{view['return_id']}/receipt", json=receipt)
    assert again.status_code == 409
    assert "already received" in again.json()["detail"]

    fetched = client.get(f"/returns/{view['return_id']}")
    assert fetched.json()["status"] == "received"
    listed = client.get("/returns", params={"order_id": str(order.order_id)})
    assert [r["return_id"] for r in listed.json()] == [view["return_id"]]


def test_refusals_over_http(
    client: TestClient, app: CustomerServiceApplication, clock: ServiceClock
) -> None:
    undelivered = placed(uuid.uuid4())
    deliver(app, undelivered)
    order = delivered_order(app)
    before = len(published(app))

    unknown = ask(client, uuid.uuid4(), [("MUG", 1)])
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    not_delivered = ask(client, undelivered.order_id, [("MUG", 1)])
    assert not_delivered.status_code == 409
    assert f"order {undelivered.order_id} is not delivered" in not_delivered.json()["detail"]
    too_many = ask(client, order.order_id, [("MUG", 1), ("TEE", 3)])
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "lines[1]"
    assert "3 units of TEE requested" in too_many.json()["detail"]
    foreign = ask(client, order.order_id, [("HAT", 1)])
    assert foreign.status_code == 422
    assert "HAT is not in order" in foreign.json()["detail"]
    repeated = ask(client, order.order_id, [("MUG", 1), ("MUG", 1)])
    assert repeated.status_code == 422
    bad_reason = ask(client, order.order_id, [("MUG", 1)], reason="bored")
    assert bad_reason.status_code == 422

    moved = client.post("/_test/clock", json={"advance_s": 31 * 86400})
    assert moved.status_code == 200
    assert moved.json()["offset_s"] == 31 * 86400
    late = ask(client, order.order_id, [("MUG", 1)])
    assert late.status_code == 409
    assert "return window" in late.json()["detail"]
    assert client.post("/_test/clock", json={"advance_s": -5}).status_code == 422
    assert client.post("/_test/clock/reset").json()["offset_s"] == 0
    assert len(published(app)) == before


def test_agent_decisions_over_http(client: TestClient, app: CustomerServiceApplication) -> None:
    order = delivered_order(app, [("TV", 2, 50_000)])
    first = ask(client, order.order_id, [("TV", 1)], "changed_mind").json()
    second = ask(client, order.order_id, [("TV", 1)], "other").json()
    assert (first["status"], second["status"]) == ("requested", "requested")
    early = client.post(
        f"/returns/{first['return_id']}/receipt",
        json={"lines": [{"sku": "TV", "quantity": 1, "result": "restockable"}]},
    )
    assert early.status_code == 409
    ok = client.post(f"/returns/{first['return_id']}/authorise", json={"agent": "ann"})
    assert ok.json()["status"] == "authorised"
    assert client.post(f"/returns/{first['return_id']}/authorise").status_code == 409
    rejected = client.post(f"/returns/{second['return_id']}/reject", json={"reason": "worn"})
    assert rejected.json()["rejection_reason"] == "worn"
    assert (
        client.post(f"/returns/{second['return_id']}/reject", json={"reason": "x"}).status_code
        == 409
    )
    wrong = client.post(
        f"/returns/{first['return_id']}/receipt",
        json={"lines": [{"sku": "TV", "quantity": 2, "result": "restockable"}]},
    )
    assert wrong.status_code == 422
    assert client.get(f"/returns/{uuid.uuid4()}").status_code == 404
    assert client.post(f"/returns/{uuid.uuid4()}/authorise").status_code == 404


def test_cases_over_http(client: TestClient, app: CustomerServiceApplication) -> None:
    order_id = uuid.uuid4()
    deliver(app, exception_of(order_id))
    auto_id = str(case_id_for("delivery_exception", order_id))
    listed = client.get("/cases", params={"kind": "delivery_exception", "order_id": str(order_id)})
    assert [c["case_id"] for c in listed.json()] == [auto_id]
    assert listed.json()[0]["priority"] == "high"

    body = {"kind": "complaint", "priority": "low", "summary": "rude courier"}
    created = client.post("/cases", json=body, headers={"Idempotency-Key": "case-1"})
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    replay = client.post("/cases", json=body, headers={"Idempotency-Key": "case-1"})
    assert replay.json()["case_id"] == case_id
    clash = client.post(
        "/cases", json={**body, "priority": "high"}, headers={"Idempotency-Key": "case-1"}
    )
    assert clash.status_code == 409
    assert client.post("/cases", json={**body, "kind": "gossip"}).status_code == 422

    assigned = client.post(f"/cases/{case_id}/assign", json={"assignee": "ann"})
    assert assigned.json()["status"] == "in_progress"
    commented = client.post(f"/cases/{case_id}/comments", json={"author": "ann", "text": "sorry"})
    assert commented.json()["first_response_at"] is not None
    assert [c["case_id"] for c in client.get("/cases", params={"assignee": "ann"}).json()] == [
        case_id
    ]
    assert client.post(f"/cases/{case_id}/close").status_code == 409
    resolved = client.post(f"/cases/{case_id}/resolve", json={"outcome": "answered"})
    assert resolved.json()["status"] == "resolved"
    assert client.post(f"/cases/{case_id}/resolve", json={"outcome": "answered"}).status_code == 409
    assert client.post(f"/cases/{case_id}/close").json()["status"] == "closed"
    assert client.get("/cases", params={"status": "closed"}).json()[0]["case_id"] == case_id
    assert client.get(f"/cases/{uuid.uuid4()}").status_code == 404
    assert client.get("/cases", params={"status": "sleeping"}).status_code == 422


def test_the_test_clock_is_not_mounted_by_default(
    app: CustomerServiceApplication, clock: ServiceClock
) -> None:
    client = client_for(app, clock, test_clock=False)
    assert client.post("/_test/clock", json={"advance_s": 60}).status_code == 404


def test_the_test_clock_answers_loopback_callers_with_the_ops_role_only(
    app: CustomerServiceApplication, clock: ServiceClock
) -> None:
    local = client_for(app, clock, test_clock=True)
    assert local.post("/_test/clock", json={"advance_s": 60}).status_code == 200
    as_role(local, "agent")
    assert local.post("/_test/clock", json={"advance_s": 60}).status_code == 403
    remote = TestClient(local.app, headers=staff_headers(), client=("203.0.113.7", 4000))
    assert remote.post("/_test/clock", json={"advance_s": 60}).status_code == 404
    assert remote.get("/_test/clock").status_code == 404
    assert clock.offset.total_seconds() == 60


def test_the_test_clock_is_refused_on_a_non_loopback_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from customer_service import main

    monkeypatch.setenv("FULFIL_PERSISTENCE", "sqlite")
    monkeypatch.setenv("FULFIL_SQLITE_DIR", str(tmp_path))
    monkeypatch.setenv("FULFIL_TEST_CLOCK", "1")
    monkeypatch.setenv("FULFIL_HTTP_HOST", "0.0.0.0")
    with pytest.raises(RuntimeError, match="loopback"):
        main.create_app()
