"""Kit privacy: sealing with per-customer data keys, erasure by key destruction, KEK rotation."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.privacy import (
    MASKED,
    REDACTED,
    DataKeyMissing,
    InMemoryKeyStore,
    KeyEncryptionKeys,
    NotAllowed,
    PersonalDataVault,
    PrivacySettings,
    is_sealed,
    mask_personal,
    open_vault,
)
from fulfilment_kit.privacy.keys import generate_kek
from fulfilment_kit.privacy.masking import mask_text
from fulfilment_kit.privacy.store import StoredKey
from fulfilment_kit.settings import ServiceSettings

SENTINEL = "Sentinel Street 42"


def vault(store: InMemoryKeyStore | None = None, keks: str | None = None) -> PersonalDataVault:
    keys = KeyEncryptionKeys.parse(keks or generate_kek("k1"))
    return PersonalDataVault(store or InMemoryKeyStore(), keys, ("contact", "payment"))


def reveals(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "fulfil_personal_data_reveals_total", {"purpose": "contact", "outcome": outcome}
    )
    return value or 0.0


def test_a_sealed_value_hides_the_plaintext_and_opens_with_the_customer_key() -> None:
    v, customer = vault(), uuid.uuid4()
    sealed = v.seal(customer, "contact", SENTINEL)
    assert is_sealed(sealed)
    assert SENTINEL not in sealed
    assert sealed != v.seal(customer, "contact", SENTINEL)  # a fresh nonce each time
    before = reveals("revealed")
    assert v.reveal(sealed) == SENTINEL
    assert reveals("revealed") == before + 1


def test_erasure_destroys_the_key_every_read_redacts_and_is_idempotent() -> None:
    store, keks = InMemoryKeyStore(), generate_kek("k1")
    v, other = vault(store, keks), vault(store, keks)  # `other`: another process with a warm cache
    customer, neighbour = uuid.uuid4(), uuid.uuid4()
    sealed = v.seal(customer, "contact", SENTINEL)
    kept = v.seal(neighbour, "contact", "Other Road 1")
    assert other.reveal(sealed) == SENTINEL
    assert v.erase(customer) == 1
    assert v.erase(customer) == 0  # idempotent
    before = reveals("erased")
    assert v.reveal(sealed) == REDACTED
    assert reveals("erased") == before + 1
    assert v.reveal(kept) == "Other Road 1"
    other.cache_s = 0  # past its cache time, the other process sees the erasure too
    other._cache.clear()
    assert other.reveal(sealed) == REDACTED
    # the customer comes back: a new key generation; the old value stays erased
    fresh = v.seal(customer, "contact", "New Lane 7")
    assert v.reveal(fresh) == "New Lane 7"
    assert v.reveal(sealed) == REDACTED


class CountingStore(InMemoryKeyStore):
    """An in-memory key store that counts the statements a vault sends it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def first_or_latest(self, key: StoredKey) -> tuple[StoredKey | None, bool]:
        self.calls += 1
        return super().first_or_latest(key)

    def latest(self, customer_id: uuid.UUID) -> StoredKey | None:
        self.calls += 1
        return super().latest(customer_id)

    def get(self, customer_id: uuid.UUID, generation: int) -> StoredKey | None:
        self.calls += 1
        return super().get(customer_id, generation)

    def create(self, key: StoredKey) -> bool:
        self.calls += 1
        return super().create(key)

    def get_many(self, wanted: Collection[tuple[uuid.UUID, int]]) -> list[StoredKey]:
        self.calls += 1
        return super().get_many(wanted)


def test_one_key_store_ask_seals_a_whole_placement_and_the_reveal_after_it_is_cached() -> None:
    store = CountingStore()
    v, customer = vault(store), uuid.uuid4()
    sealer = v.sealer(customer)  # a new customer: their first key is made by the same ask
    sealed = [sealer.seal("contact", f"{SENTINEL} {i}") for i in range(6)]
    token = sealer.seal("payment", "tok_visa")
    assert store.calls == 1
    assert [v.reveal(s) for s in sealed] == [f"{SENTINEL} {i}" for i in range(6)]
    assert v.reveal(token) == "tok_visa"
    assert store.calls == 1
    v.sealer(customer)  # a returning customer: one ask again
    assert store.calls == 2


def test_an_erasure_by_another_replica_gives_the_next_order_a_new_generation_at_once() -> None:
    """Replica A sealed for the customer a moment ago (its key cache is warm); replica B erases
    the customer, who then orders again on A: that order must be sealed under a new, live key
    (a destroyed one would read [erased] everywhere and decline the payment)."""
    store, keks = InMemoryKeyStore(), generate_kek("k1")
    a, b = vault(store, keks), vault(store, keks)
    customer = uuid.uuid4()
    before = a.seal(customer, "contact", SENTINEL)
    assert b.erase(customer) == 1
    after = a.seal(customer, "contact", "New Lane 7")
    assert after.split(":")[3] == "2"  # the generation
    assert b.reveal(after) == "New Lane 7"
    assert b.reveal(before) == REDACTED


def test_concurrent_first_seals_in_memory_agree_on_one_key() -> None:
    store, keks = InMemoryKeyStore(), generate_kek("k1")
    vaults = [vault(store, keks) for _ in range(8)]
    customer = uuid.uuid4()
    with ThreadPoolExecutor(8) as pool:
        sealed = list(pool.map(lambda v: v.seal(customer, "contact", SENTINEL), vaults))
    assert {vaults[-1].reveal(s) for s in sealed} == {SENTINEL}
    assert len(store._keys) == 1


def test_a_key_store_without_the_customers_key_is_an_error_not_an_erasure() -> None:
    """Two services on different key stores (a misconfiguration) must fail loudly: reading the
    value as erased would decline every payment and blank every label without a word."""
    keks = generate_kek("k1")
    orders, payments = vault(InMemoryKeyStore(), keks), vault(InMemoryKeyStore(), keks)
    sealed = orders.seal(uuid.uuid4(), "payment", "tok_visa")
    with pytest.raises(DataKeyMissing, match="FULFIL_PRIVACY_KEYSTORE_DBNAME"):
        payments.reveal(sealed)
    with pytest.raises(DataKeyMissing):  # and not cached as erased
        payments.reveal(sealed)


def test_a_value_cannot_move_to_another_customer_or_purpose() -> None:
    v, customer = vault(), uuid.uuid4()
    v.seal(uuid.UUID(int=1), "contact", "x")
    sealed = v.seal(customer, "payment", "tok_visa")
    moved = sealed.replace(str(customer), str(uuid.UUID(int=1)))
    assert v.reveal(moved) == REDACTED
    assert v.reveal(sealed.replace(":payment:", ":contact:", 1)) == REDACTED


def test_a_service_opens_only_the_purposes_it_needs() -> None:
    store, keks = InMemoryKeyStore(), KeyEncryptionKeys.parse(generate_kek("k1"))
    orders = PersonalDataVault(store, keks, ())
    shipping = PersonalDataVault(store, keks, ("contact",))
    customer = uuid.uuid4()
    token = orders.seal(customer, "payment", "tok_visa")
    with pytest.raises(NotAllowed):
        shipping.reveal(token)
    assert shipping.reveal(orders.seal(customer, "contact", SENTINEL)) == SENTINEL


def test_plaintext_from_before_sealing_reads_as_is() -> None:
    assert vault().reveal("1 Old Street") == "1 Old Street"


def test_kek_rotation_rewraps_every_live_key_and_the_old_kek_can_go() -> None:
    store, old, new = InMemoryKeyStore(), generate_kek("old"), generate_kek("new")
    before = vault(store, old)
    sealed = [before.seal(uuid.uuid4(), "contact", f"{SENTINEL} {i}") for i in range(5)]
    rotating = vault(store, f"{new},{old}")
    assert rotating.reveal(sealed[0]).startswith(SENTINEL)  # old keys still unwrap
    assert rotating.rewrap(batch=2) == 5
    assert rotating.rewrap() == 0
    after = vault(store, new)  # the old KEK removed from the configuration
    assert [after.reveal(s) for s in sealed] == [f"{SENTINEL} {i}" for i in range(5)]
    assert {k.kek_id for k in store._keys.values()} == {"new"}


def test_kek_list_is_checked() -> None:
    for bad in (
        "",
        "k1",
        "k1=notbase64!",
        "k1=" + "QUFB",
        f"{generate_kek('a')},{generate_kek('a')}",
    ):
        with pytest.raises(ValueError, match=r"KEK|key"):
            KeyEncryptionKeys.parse(bad)


def test_the_dev_kek_is_generated_once_and_refused_when_forbidden(tmp_path: Path) -> None:
    settings = PrivacySettings(dev_dir=tmp_path / "privacy")
    first = KeyEncryptionKeys.from_settings(settings)
    assert KeyEncryptionKeys.from_settings(settings) == first
    assert (tmp_path / "privacy" / "dev-kek").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="DEV_KEK"):
        PrivacySettings(dev_kek=False)


def test_the_sqlite_key_store_is_shared_by_the_services_of_one_machine(tmp_path: Path) -> None:
    embedded = ServiceSettings(persistence="sqlite", sqlite_dir=tmp_path)
    settings = PrivacySettings(dev_dir=tmp_path / "privacy")
    orders = open_vault("orders", (), settings, embedded)
    shipping = open_vault("shipping", ("contact",), settings, embedded)
    customer = uuid.uuid4()
    sealed = orders.seal(customer, "contact", SENTINEL)
    assert shipping.reveal(sealed) == SENTINEL
    assert orders.erase(customer) == 1
    shipping._cache.clear()
    assert shipping.reveal(sealed) == REDACTED
    orders.close()
    shipping.close()


def test_masking_hides_sealed_and_plaintext_personal_values() -> None:
    v, customer = vault(), uuid.uuid4()
    sealed = v.seal(customer, "contact", SENTINEL)
    document = {
        "customer_id": str(customer),
        "shipping_address": {"line1": sealed},
        "notes": [sealed],
        "recipient_name": "Ada",
        "sealed_payment_token": v.seal(customer, "payment", "tok_visa"),
        "carrier_name": "DHL",
        "total_minor": 100,
    }
    masked = mask_personal(document)
    assert SENTINEL not in json.dumps(masked)
    assert "pii1:" not in json.dumps(masked)
    assert masked["shipping_address"] == MASKED
    assert masked["notes"] == [MASKED]
    assert masked["recipient_name"] == MASKED
    assert masked["sealed_payment_token"] == MASKED
    assert masked["carrier_name"] == "DHL"
    assert masked["customer_id"] == str(customer)
    assert "pii1:" not in mask_text(f"bad value {sealed!r}")


def test_the_cli_prints_a_kek_entry_the_settings_accept(capsys: pytest.CaptureFixture[str]) -> None:
    from customer_service.cli import main

    assert main(["privacy", "new-kek", "k2"]) == 0
    entry = capsys.readouterr().out.strip()
    assert KeyEncryptionKeys.parse(entry).current == "k2"
    assert PrivacySettings(keks=entry).dev is False


def test_the_postgres_key_store_opens_while_the_database_is_down() -> None:
    """A replica starting during a database outage must come up (and answer 503 until it is
    back), not exit: the key store makes its table at first use, not when it is opened."""
    from psycopg_pool import PoolTimeout

    from fulfilment_kit.privacy.store import PostgresKeyStore
    from fulfilment_kit.settings import PostgresSettings

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgresKeyStore(PostgresSettings(port=port, pool_timeout_s=1), "fulfil_keys")
    try:
        with pytest.raises(PoolTimeout):
            store.latest(uuid.uuid4())
    finally:
        store.close()


class BatchCountingStore(CountingStore):
    def first_or_latest_many(
        self, keys: Sequence[StoredKey]
    ) -> list[tuple[StoredKey | None, bool]]:
        self.calls += 1
        return [InMemoryKeyStore.first_or_latest(self, key) for key in keys]


def test_sealers_for_a_group_of_placements_ask_the_key_store_once() -> None:
    """Group commit: new and returning customers' keys in one ask, each sealer as `sealer`
    makes it; an erased customer still gets a new generation (their own ask)."""
    store = BatchCountingStore()
    v = vault(store)
    returning, erased, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    known = v.sealer(returning)
    old = v.sealer(erased).seal("contact", SENTINEL)
    v.erase(erased)
    store.calls = 0
    sealers = v.sealers([new, returning, new, erased])
    assert list(sealers) == [new, returning, erased]
    assert store.calls == 1 + 2  # one batch ask; the erased customer's own (ask, create)
    assert sealers[returning].generation == known.generation == 1
    assert sealers[new].generation == 1
    assert sealers[erased].generation == 2
    store.calls = 0
    assert len(v.sealers([uuid.uuid4(), uuid.uuid4(), returning])) == 3
    assert store.calls == 1
    assert v.reveal(sealers[new].seal("contact", "Ada")) == "Ada"
    assert v.reveal(sealers[erased].seal("contact", "New Lane 7")) == "New Lane 7"
    assert v.reveal(old) == REDACTED


def test_a_batch_about_to_reveal_reads_its_keys_with_one_ask_and_erased_ones_stay_erased() -> None:
    """The payments worker prefetches the keys of a round's card tokens: one key-store ask,
    then each reveal is served from the cache; an erased customer's token reads REDACTED."""
    store, keks = CountingStore(), generate_kek("k1")
    orders, payments = vault(store, keks), vault(store, keks)
    customers = [uuid.uuid4() for _ in range(5)]
    tokens = [orders.seal(c, "payment", f"tok_{i}") for i, c in enumerate(customers)]
    assert orders.erase(customers[0]) == 1
    store.calls = 0

    payments.prefetch([*tokens, None, "not-sealed"])
    assert store.calls == 1
    assert [payments.reveal(t) for t in tokens] == [REDACTED, "tok_1", "tok_2", "tok_3", "tok_4"]
    assert store.calls == 1, "every key came with the one ask"
    payments.prefetch(tokens)
    assert store.calls == 1, "all cached: nothing asked"
