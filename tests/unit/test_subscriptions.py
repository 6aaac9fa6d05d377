"""Every consumer subscribes to exactly the topics of the events it reacts to."""

from __future__ import annotations

import pytest

from customer_service.application import CustomerServiceApplication
from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.inbox import ProcessApplication
from inventory.application import InventoryApplication
from orders.application import OrdersApplication
from payments.application import PaymentsApplication
from shipping.application import ShippingApplication

SERVICES: dict[str, type[ProcessApplication]] = {
    "orders": OrdersApplication,
    "inventory": InventoryApplication,
    "payments": PaymentsApplication,
    "shipping": ShippingApplication,
    "customer-service": CustomerServiceApplication,
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_consumer_subscribes_to_the_topics_of_what_it_reacts_to(service: str) -> None:
    reacts_to = SERVICES[service].reacts_to
    assert reacts_to, f"{service} names the events it reacts to"
    assert set(topics.CONSUMERS[service]) == set(topics.sources_of(reacts_to))


def test_shipping_does_not_subscribe_to_payments() -> None:
    assert topics.PAYMENTS not in topics.CONSUMERS["shipping"]
