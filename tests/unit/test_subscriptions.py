"""Every consumer subscribes to exactly the topics of the events it reacts to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from customer_service.application import CustomerServiceApplication
from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.inbox import ProcessApplication
from inventory.application import InventoryApplication
from orders.application import OrdersApplication
from payments.application import PaymentsApplication
from shipping.application import ShippingApplication

REPO = Path(__file__).resolve().parents[2]
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


def test_the_consumer_registry_is_what_the_policies_derive() -> None:
    """topics.CONSUMERS is generated from the policies (`make manifests`): it never drifts."""
    spec = importlib.util.spec_from_file_location("consumers", REPO / "deploy/consumers.py")
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.derived() == topics.CONSUMERS, "run: make manifests"
    assert generator.TARGET.read_text() == generator.rendered(), "run: make manifests"


def test_the_read_models_subscribe_to_every_topic_that_carries_a_public_event() -> None:
    assert topics.CONSUMERS["customer-service-projections"] == topics.ALL
