"""A batch of parcels dispatched together opens its sealed addresses with one key-store
read, not one per parcel (the dispatcher's round under load)."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from fulfilment_kit.privacy import InMemoryKeyStore, KeyEncryptionKeys, PersonalDataVault
from fulfilment_kit.privacy.keys import generate_kek
from fulfilment_kit.privacy.store import StoredKey
from fulfilment_kit.tracing import Trace
from shipping.application import ShippingApplication
from shipping.domain import shipment_id_for
from tests.unit.test_shipping_policy import NOW, Feed, paid, placed


class CountingKeyStore(InMemoryKeyStore):
    """The in-memory key store, counting its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.get_manys = 0

    def get(self, customer_id: uuid.UUID, generation: int) -> StoredKey | None:
        self.gets += 1
        return super().get(customer_id, generation)

    def get_many(self, wanted: Collection[tuple[uuid.UUID, int]]) -> list[StoredKey]:
        self.get_manys += 1
        return super().get_many(wanted)


def test_a_dispatched_batch_reads_its_addresses_keys_once() -> None:
    store = CountingKeyStore()
    keks = KeyEncryptionKeys.parse(generate_kek("k1"))
    orders = PersonalDataVault(store, keks, ())
    shipping = PersonalDataVault(store, keks, ("contact",), cache_s=5.0)
    app = ShippingApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=lambda: NOW, vault=shipping
    )
    feed = Feed(app)
    order_ids = [uuid.uuid4() for _ in range(3)]
    for order_id in order_ids:
        event = placed(order_id)
        address = event.shipping_address
        sealed = address.model_copy(
            update={
                name: orders.seal(event.customer_id, "contact", value)
                for name, value in address.model_dump().items()
                if isinstance(value, str) and name != "country_code"
            }
        )
        feed.send(feed.message(event.model_copy(update={"shipping_address": sealed})))
        feed.send(feed.message(paid(order_id)))
    traces = {shipment_id_for(o): Trace(str(o), "dispatch") for o in order_ids}
    reads_before = (store.gets, store.get_manys)

    shipped = app.dispatch_batch(traces)

    assert sorted(shipped) == sorted(traces)
    assert (store.gets - reads_before[0], store.get_manys - reads_before[1]) == (0, 1)
    for order_id in order_ids:  # the carrier was handed the plaintext
        assert app.get_shipment(order_id).carrier is not None
