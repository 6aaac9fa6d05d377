"""Orders seals personal data at placement, publishes it sealed, masks it for ops, erases it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fulfilment_kit.contracts import CustomerErased, OrderPlaced
from fulfilment_kit.http.auth import AGENT, FINANCE, OPS, SERVICE
from fulfilment_kit.privacy import MASKED, REDACTED, is_sealed
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from orders.api import router
from orders.application import OrdersApplication
from orders.contracts import to_public
from tests.support.auth import as_role, staff_headers

SAMPLE = json.loads((Path(__file__).parents[2] / "deploy/local/sample-order.json").read_text())
SENTINELS = {
    "recipient_name": "Zelda Sentinelname",
    "line1": "77 Sentinelstreet",
    "phone": "+49 30 5550199",
    "email": "zelda.sentinel@example.invalid",
}
TOKEN = "tok_sentinel_visa"


@pytest.fixture
def app() -> OrdersApplication:
    return OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


@pytest.fixture
def client(app: OrdersApplication) -> TestClient:
    runtime = ServiceRuntime(service="orders", app=app, mapper=to_public, output_topics=[])
    return TestClient(
        create_http_app(runtime, routers=[router], title="orders"), headers=staff_headers()
    )


def place(client: TestClient) -> dict[str, object]:
    body = json.loads(json.dumps(SAMPLE))
    body["shipping_address"].update(SENTINELS)
    body["payment_token"] = TOKEN
    reply = client.post("/orders", json=body)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def stored_text(app: OrdersApplication) -> str:
    notifications = app.recorder.select_notifications(1, 1000)
    return "".join(n.state.decode(errors="replace") for n in notifications)


def public_payloads(app: OrdersApplication) -> list[dict[str, object]]:
    out = []
    for n in app.recorder.select_notifications(1, 1000):
        for outbound in to_public(app.mapper.to_domain_event(n)):
            out.append(json.loads(outbound.event.model_dump_json()))
    return out


def test_the_event_store_and_the_topic_hold_personal_data_only_sealed(
    client: TestClient, app: OrdersApplication
) -> None:
    order = place(client)
    text = stored_text(app)
    for value in [*SENTINELS.values(), TOKEN]:
        assert value not in text
    (placed,) = public_payloads(app)
    event = OrderPlaced.model_validate(placed)
    assert event.payment_token is None
    assert event.payment_method is not None
    assert event.payment_method.startswith("pm_")
    assert is_sealed(event.sealed_payment_token)
    assert is_sealed(event.shipping_address.line1)
    assert event.shipping_address.country_code == "DE"
    for value in [*SENTINELS.values(), TOKEN]:
        assert value not in json.dumps(placed)
    # the customer (and staff) see their order's address in clear through the kit
    assert order["shipping_address"]["line1"] == SENTINELS["line1"]  # type: ignore[index]


def test_get_events_masks_personal_fields_for_ops_and_keeps_them_sealed_for_services(
    client: TestClient,
) -> None:
    place(client)
    as_role(client, OPS)
    (masked,) = client.get("/events").json()["events"]
    assert masked["payload"]["shipping_address"] == MASKED
    assert masked["payload"]["sealed_payment_token"] == MASKED
    as_role(client, SERVICE)
    (sealed,) = client.get("/events").json()["events"]
    assert is_sealed(sealed["payload"]["shipping_address"]["line1"])


def test_erasure_destroys_the_key_publishes_once_and_is_idempotent(
    client: TestClient, app: OrdersApplication
) -> None:
    order = place(client)
    customer = order["customer_id"]
    as_role(client, FINANCE)
    assert client.post(f"/customers/{customer}/erasure").status_code == 403
    as_role(client, AGENT)
    first = client.post(f"/customers/{customer}/erasure")
    assert first.status_code == 201, first.text
    assert first.json()["keys_destroyed"] == 1
    assert first.json()["requested_role"] == AGENT
    as_role(client, OPS)
    again = client.post(f"/customers/{customer}/erasure")
    assert again.status_code == 200
    assert again.json()["keys_destroyed"] == 0
    assert again.json()["erased_at"] == first.json()["erased_at"]
    erased = [p for p in public_payloads(app) if set(p) == {"customer_id", "erased_at"}]
    assert len(erased) == 1
    assert CustomerErased.model_validate(erased[0]).customer_id == uuid.UUID(str(customer))
    as_role(client, AGENT)
    view = client.get(f"/orders/{order['order_id']}").json()
    address = view["shipping_address"]
    assert address["line1"] == address["email"] == REDACTED
    assert address["country_code"] == "DE"
    assert view["total_minor"] == order["total_minor"]  # the order and its money stay
