"""The key store on a real PostgreSQL: shared by services, erased for good, rotated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from fulfilment_kit.privacy import REDACTED, KeyEncryptionKeys, PersonalDataVault
from fulfilment_kit.privacy.keys import generate_kek
from fulfilment_kit.privacy.store import TABLE, PostgresKeyStore, StoredKey
from fulfilment_kit.settings import PostgresSettings
from tests.support.stack import create_database, drop_database

SENTINEL = "sentinel-keystore@example.invalid"


@pytest.fixture
def database() -> Iterator[str]:
    name = create_database("fulfil_it_keys")
    try:
        yield name
    finally:
        drop_database(name)


def store(database: str) -> PostgresKeyStore:
    return PostgresKeyStore(PostgresSettings(), database)


def test_two_services_share_keys_and_an_erasure_leaves_nothing_that_opens(database: str) -> None:
    keks = KeyEncryptionKeys.parse(generate_kek("k1"))
    orders = PersonalDataVault(store(database), keks, ())
    shipping = PersonalDataVault(store(database), keks, ("contact",), cache_s=0)
    customer = uuid.uuid4()
    sealed = orders.seal(customer, "contact", SENTINEL)
    assert shipping.reveal(sealed) == SENTINEL
    assert orders.erase(customer) == 1
    assert orders.erase(customer) == 0
    assert shipping.reveal(sealed) == REDACTED
    pg = PostgresSettings()
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=database
    ) as conn:
        rows = conn.execute(
            f"SELECT wrapped, kek_id, erased_at FROM {TABLE} WHERE customer_id = %s",
            (customer,),
        ).fetchall()
    assert [(w, k, e is not None) for w, k, e in rows] == [(None, None, True)]  # a tombstone
    orders.close()
    shipping.close()


def test_concurrent_first_seals_agree_on_one_key(database: str) -> None:
    keks = KeyEncryptionKeys.parse(generate_kek("k1"))
    vaults = [PersonalDataVault(store(database), keks, ("contact",)) for _ in range(4)]
    customer = uuid.uuid4()
    with ThreadPoolExecutor(4) as pool:
        sealed = list(pool.map(lambda v: v.seal(customer, "contact", SENTINEL), vaults))
    assert {vaults[0].reveal(s) for s in sealed} == {SENTINEL}
    for v in vaults:
        v.close()


def test_rotation_on_postgres(database: str) -> None:
    old, new = generate_kek("old"), generate_kek("new")
    before = PersonalDataVault(store(database), KeyEncryptionKeys.parse(old), ("contact",))
    sealed = before.seal(uuid.uuid4(), "contact", SENTINEL)
    rotating = PersonalDataVault(
        store(database), KeyEncryptionKeys.parse(f"{new},{old}"), ("contact",)
    )
    assert rotating.rewrap() == 1
    after = PersonalDataVault(store(database), KeyEncryptionKeys.parse(new), ("contact",))
    assert after.reveal(sealed) == SENTINEL
    for v in (before, rotating, after):
        v.close()


def test_first_or_latest_creates_only_a_first_key_and_reads_the_newest_otherwise(
    database: str,
) -> None:
    """The placement's one key-store statement: a new customer's generation 1 is stored by it;
    a known customer's newest row (live, or erased) is read by it and nothing is stored."""
    keks = KeyEncryptionKeys.parse(generate_kek("k1"))
    keys = store(database)
    customer = uuid.uuid4()
    first = StoredKey(customer, 1, "k1", b"first")
    assert keys.first_or_latest(first) == (first, True)
    assert keys.first_or_latest(StoredKey(customer, 1, "k1", b"again")) == (first, False)
    assert keys.erase(customer) == 1
    newest, created = keys.first_or_latest(StoredKey(customer, 1, "k1", b"third"))
    assert created is False
    assert newest is not None
    assert (newest.generation, newest.erased) == (1, True)
    # another replica erased the customer: the next seal here gets generation 2, live at once
    orders = PersonalDataVault(store(database), keks, ("contact",))
    other = PersonalDataVault(store(database), keks, ("contact",))
    again = uuid.uuid4()
    old = orders.seal(again, "contact", SENTINEL)
    assert other.erase(again) == 1
    fresh = orders.seal(again, "contact", "New Lane 7")
    assert fresh.split(":")[3] == "2"
    assert other.reveal(fresh) == "New Lane 7"
    assert other.reveal(old) == REDACTED
    for closing in (keys, orders, other):
        closing.close()


def test_first_or_latest_many_answers_each_key_as_first_or_latest_does(database: str) -> None:
    """A group of placements' one statement: new customers' generation 1 stored, a known
    customer's newest (live or erased) read, nothing else stored."""
    keys = store(database)
    known, erased, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    known_first = StoredKey(known, 1, "k1", b"known")
    assert keys.first_or_latest(known_first) == (known_first, True)
    assert keys.create(StoredKey(known, 2, "k1", b"known-2"))
    assert keys.first_or_latest(StoredKey(erased, 1, "k1", b"erased"))[1] is True
    assert keys.erase(erased) == 1
    asked = [StoredKey(c, 1, "k1", c.bytes) for c in (known, new, erased)]
    answers = keys.first_or_latest_many(asked)
    assert answers[0] == (StoredKey(known, 2, "k1", b"known-2"), False)
    assert answers[1] == (asked[1], True)
    newest, created = answers[2]
    assert created is False
    assert newest is not None
    assert (newest.customer_id, newest.generation, newest.erased) == (erased, 1, True)
    assert keys.latest(new) == asked[1]
    assert keys.get(known, 1) == known_first  # not overwritten
    assert keys.first_or_latest_many([asked[1], StoredKey(uuid.uuid4(), 1, "k1", b"x")])[0] == (
        asked[1],
        False,
    )


def test_many_keys_are_read_with_one_statement_each_pair_as_asked(database: str) -> None:
    keys = store(database)
    first, second, absent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for customer, generation in ((first, 1), (first, 2), (second, 1)):
        assert keys.create(StoredKey(customer, generation, "k1", b"wrapped"))
    found = keys.get_many([(first, 2), (second, 1), (absent, 1), (second, 3)])
    assert sorted((k.customer_id, k.generation) for k in found) == sorted([(first, 2), (second, 1)])
    assert keys.get_many([]) == []
    keys.close()
