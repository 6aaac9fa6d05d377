"""Object-level authorisation and caller-scoped idempotency over HTTP: a customer reads and
changes only their own orders and returns (another customer's are 404: no existence
oracle), an agent reads anyone's; the same Idempotency-Key of two callers is two requests,
and ids derived from a key cannot be computed without the server's secret."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from customer_service.api import router as cs_router
from customer_service.application import CustomerServiceApplication
from customer_service.contracts import to_public as cs_to_public
from customer_service.returns.domain import return_id_for_key
from fulfilment_kit.http.auth import Authenticator, Principal
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.settings import AuthSettings
from orders.api import router as orders_router
from orders.application import IDEMPOTENCY_NAMESPACE, OrdersApplication
from orders.contracts import to_public as orders_to_public
from tests.support.auth import bearer, customer_headers
from tests.unit.test_customer_service_policy import delivered_order

SAMPLE = json.loads((Path(__file__).parents[2] / "deploy/local/sample-order.json").read_text())
ALICE, BOB = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def orders() -> TestClient:
    runtime = ServiceRuntime(
        service="orders",
        app=OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}),
        mapper=orders_to_public,
        output_topics=[],
    )
    return TestClient(create_http_app(runtime, routers=[orders_router], title="orders"))


def order_of(customer: uuid.UUID) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    body["customer_id"] = str(customer)
    return body


def place(client: TestClient, customer: uuid.UUID, key: str | None = None) -> Any:
    headers = customer_headers(customer) | ({"Idempotency-Key": key} if key else {})
    return client.post("/orders", json=order_of(customer), headers=headers)


def test_a_customer_reads_and_cancels_only_their_own_orders(orders: TestClient) -> None:
    placed = place(orders, ALICE)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    unknown = orders.get(f"/orders/{uuid.uuid4()}", headers=customer_headers(BOB))

    theirs = orders.get(f"/orders/{order_id}", headers=customer_headers(BOB))
    assert theirs.status_code == 404
    assert theirs.json()["title"] == unknown.json()["title"]  # indistinguishable from none
    cancel = orders.post(f"/orders/{order_id}/cancel", headers=customer_headers(BOB))
    assert cancel.status_code == 404
    assert orders.get(f"/orders/{order_id}", headers=bearer("agent")).json()["status"] == "placed"

    own = orders.get(f"/orders/{order_id}", headers=customer_headers(ALICE))
    assert own.status_code == 200
    assert own.json()["customer_id"] == str(ALICE)
    mine = orders.post(f"/orders/{order_id}/cancel", headers=customer_headers(ALICE))
    assert mine.status_code == 200, mine.text
    assert mine.json()["status"] == "cancelled"


def test_an_agent_reads_any_order_but_may_not_cancel(orders: TestClient) -> None:
    order_id = place(orders, ALICE).json()["order_id"]
    assert orders.get(f"/orders/{order_id}", headers=bearer("agent")).status_code == 200
    assert orders.post(f"/orders/{order_id}/cancel", headers=bearer("agent")).status_code == 403


def test_a_customer_places_orders_for_themselves_only(orders: TestClient) -> None:
    reply = orders.post("/orders", json=order_of(BOB), headers=customer_headers(ALICE))
    assert reply.status_code == 403
    assert "customer_id" in reply.json()["detail"]
    on_behalf = orders.post("/orders", json=order_of(BOB), headers=bearer("ops"))
    assert on_behalf.status_code == 201


def test_the_same_key_of_two_customers_is_two_orders_and_replays_are_exact(
    orders: TestClient,
) -> None:
    alice = place(orders, ALICE, key="checkout-1")
    bob = place(orders, BOB, key="checkout-1")
    assert alice.status_code == bob.status_code == 201, bob.text
    assert alice.json()["order_id"] != bob.json()["order_id"]
    again = place(orders, ALICE, key="checkout-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == alice.json()
    # Nobody can compute the order id from the key (the old uuid5 derivation, say).
    assert alice.json()["order_id"] != str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, "checkout-1"))


def test_scoped_keys_need_the_server_secret() -> None:
    caller = Principal("alice", "https://idp.test", frozenset({"customer"}))
    other = Principal("bob", "https://idp.test", frozenset({"customer"}))
    one = Authenticator(AuthSettings(idempotency_secret="a" * 32))
    two = Authenticator(AuthSettings(idempotency_secret="b" * 32))
    assert one.scoped_key(caller, "k") == one.scoped_key(caller, "k")
    assert one.scoped_key(caller, "k") != one.scoped_key(other, "k")
    assert one.scoped_key(caller, "k") != two.scoped_key(caller, "k")
    assert "k" not in one.scoped_key(caller, "k")


# --- returns -------------------------------------------------------------------------------


@pytest.fixture
def cs_app() -> CustomerServiceApplication:
    return CustomerServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


@pytest.fixture
def cs(cs_app: CustomerServiceApplication) -> TestClient:
    runtime = ServiceRuntime(
        service="customer-service", app=cs_app, mapper=cs_to_public, output_topics=[]
    )
    return TestClient(create_http_app(runtime, routers=[cs_router], title="customer-service"))


def return_body(order_id: uuid.UUID) -> dict[str, Any]:
    return {
        "order_id": str(order_id),
        "lines": [{"sku": "MUG", "quantity": 1}],
        "reason_code": "damaged",
    }


def test_a_customer_returns_and_reads_only_their_own(
    cs: TestClient, cs_app: CustomerServiceApplication
) -> None:
    order = delivered_order(cs_app)
    owner = order.customer_id
    stranger = cs.post("/returns", json=return_body(order.order_id), headers=customer_headers(BOB))
    assert stranger.status_code == 404, stranger.text
    assert cs_app.list_returns(order.order_id) == []

    created = cs.post(
        "/returns",
        json=return_body(order.order_id),
        headers=customer_headers(owner) | {"Idempotency-Key": "r-1"},
    )
    assert created.status_code == 201, created.text
    return_id = created.json()["return_id"]
    assert return_id != str(return_id_for_key("r-1"))  # not computable from the key

    assert cs.get(f"/returns/{return_id}", headers=customer_headers(BOB)).status_code == 404
    listed = cs.get(
        "/returns", params={"order_id": str(order.order_id)}, headers=customer_headers(BOB)
    )
    assert listed.json() == []
    assert cs.get(f"/returns/{return_id}", headers=customer_headers(owner)).status_code == 200
    assert cs.get(f"/returns/{return_id}", headers=bearer("agent")).status_code == 200
    mine = cs.get(
        "/returns", params={"order_id": str(order.order_id)}, headers=customer_headers(owner)
    )
    assert [r["return_id"] for r in mine.json()] == [return_id]
    # Deciding or receiving a return is for agents and the warehouse, never the customer.
    receipt = {"lines": [{"sku": "MUG", "quantity": 1, "result": "restockable"}]}
    as_owner = cs.post(
        f"/returns/{return_id}/receipt", json=receipt, headers=customer_headers(owner)
    )
    assert as_owner.status_code == 403
    received = cs.post(f"/returns/{return_id}/receipt", json=receipt, headers=bearer("warehouse"))
    assert received.status_code == 200, received.text


def test_an_agent_requests_a_return_for_any_customer(
    cs: TestClient, cs_app: CustomerServiceApplication
) -> None:
    order = delivered_order(cs_app)
    reply = cs.post("/returns", json=return_body(order.order_id), headers=bearer("agent"))
    assert reply.status_code == 201, reply.text
    assert reply.json()["customer_id"] == str(order.customer_id)
