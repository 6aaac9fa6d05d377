"""Personal data end to end: sealed everywhere, erasable by crypto-shredding.

An order with sentinel personal data (name, street, phone, email, payment token) goes through
its lifecycle; a plain consumer of the orders topic sees none of it in clear; after
`POST /customers/{id}/erasure` a scan of every topic and DLQ record, every table of every
service database (event stores, snapshots, read models, the key store), every log line and
every metric finds no sentinel in plaintext and nothing that still opens; totals, stock and KPIs
stay; the erasure is idempotent and the read models rebuild from topics and logs to the same.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
from psycopg import sql

from customer_service.projections.sources import TopicSource
from fulfilment_kit.contracts import topics
from fulfilment_kit.http.auth import AGENT, OPS
from fulfilment_kit.privacy import REDACTED, KeyEncryptionKeys, PersonalDataVault, PrivacySettings
from fulfilment_kit.privacy.store import PostgresKeyStore
from fulfilment_kit.settings import PostgresSettings
from tests.e2e.platform import PROCESSES, Platform, events_of, new_sku, types_of
from tests.e2e.test_lifecycle import dispatch
from tests.e2e.test_read_models import log_source, rebuild
from tests.support.auth import bearer, signed
from tests.support.polling import eventually
from tests.support.stack import read_topic

SEALED = re.compile(rb"pii1:[a-z]+:[0-9a-f-]{36}:[0-9]+:[A-Za-z0-9_-]+")


def sentinels() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "recipient_name": f"Sentinelname {tag}",
        "line1": f"{tag} Sentinelstrasse",
        "phone": f"+49 30 {int(tag, 16) % 10**9:09d}",
        "email": f"sentinel.{tag}@example.invalid",
        "token": f"tok_sentinel_{tag}",
    }


def found_in(blob: bytes, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value.encode() in blob]


async def topic_bytes() -> dict[str, bytes]:
    """Every record (key, headers, value) of every topic, DLQs and the audit topic included."""
    out: dict[str, bytes] = {}
    for name in topics.all_physical_topics():
        parts = []
        for record in await read_topic(name):
            parts.append(repr(record).encode())
            parts.append(record.value or b"")
        out[name] = b"\n".join(parts)
    return out


def database_bytes(database: str) -> dict[str, bytes]:
    """Every row of every table of a database, bytea columns as their bytes."""
    pg = PostgresSettings()
    out: dict[str, bytes] = {}
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=database
    ) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchall()
            parts = [
                bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
                for row in rows
                for v in row
            ]
            out[f"{database}.{schema}.{table}"] = b"\n".join(parts)
    return out


async def metrics_text(platform: Platform) -> bytes:
    parts = []
    for name in PROCESSES:
        async with platform[name].client() as client:
            parts.append((await client.get("/metrics")).content)
    return b"\n".join(parts)


async def kpis(platform: Platform) -> dict[str, Any]:
    async with platform["customer-service"].client() as client:
        reply = await client.get("/kpis")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


async def delivered_event(topic: str, order_id: str, ce_type: str) -> str:
    """The ce_id of the order's `ce_type` event on `topic`, once it is published."""

    async def published() -> str | None:
        found = [r for r in await events_of(topic, order_id) if r.headers["ce_type"] == ce_type]
        return str(found[0].headers["ce_id"]) if found else None

    ce_id: str = await eventually(
        published, until=lambda c: c is not None, timeout=60, what=f"{ce_type} published"
    )
    return ce_id


async def test_erasure_leaves_no_personal_data_anywhere_and_keeps_the_books(
    platform: Platform,
) -> None:
    values = sentinels()
    customer = str(uuid.uuid4())
    sku = new_sku("PRIV")
    await platform.receive_stock(sku, 10)
    address = {k: v for k, v in values.items() if k != "token"}
    order = await platform.place_order(
        [(sku, 2, 1500)], token=values["token"], address=address, customer_id=customer
    )
    order_id = order["order_id"]
    assert order["shipping_address"]["email"] == values["email"]  # the customer sees it
    await platform.order_reaches(order_id, "paid")  # payments opened the token to charge
    shipment = await dispatch(platform, order_id)  # shipping opened the address to book
    async with platform["shipping"].client() as client:
        hook = {"tracking_number": shipment["tracking_number"], "status": "delivered"}
        assert (await client.post("/carrier/webhooks", **signed(hook))).status_code == 200
    await platform.order_reaches(order_id, "delivered")

    # A new subscriber reading the orders topic from the beginning, with no key.
    orders_topic = await read_topic(topics.physical(topics.ORDERS))
    placed = [r for r in orders_topic if order_id.encode() in (r.key or b"")]
    assert placed, "the order's records are on the orders topic"
    plain = b"\n".join(repr(r).encode() + (r.value or b"") for r in orders_topic)
    assert found_in(plain, values) == []
    assert SEALED.search(placed[0].value or b"")  # the personal fields travel sealed

    # The books before erasure, once the read models have this order's deliveries (they
    # follow the topics on their own time: a KPI read too early misses the delivery).
    for topic, delivered_type in (
        (topics.ORDERS, "fulfilment.order.delivered.v1"),
        (topics.SHIPPING, "fulfilment.shipment.delivered.v1"),
    ):
        ce_id = await delivered_event(topic, order_id, delivered_type)
        async with platform["customer-service"].client() as client:
            reply = await client.get("/kpis", params={"wait_for": ce_id, "timeout_s": 10})
            assert reply.status_code == 200, reply.text
    before_kpis = await kpis(platform)
    before_stock = await platform.get("inventory", f"/stock/{sku}")
    payment = await platform.get("payments", f"/payments/{order_id}")
    assert payment["captured_minor"] == 3000

    async with platform["orders"].client(bearer(AGENT)) as client:
        first = await client.post(f"/customers/{customer}/erasure")
        assert first.status_code == 201, first.text
        assert first.json()["keys_destroyed"] == 1
    async with platform["orders"].client(bearer(OPS)) as client:
        again = await client.post(f"/customers/{customer}/erasure")
        assert again.status_code == 200, again.text
        assert again.json()["erased_at"] == first.json()["erased_at"]

    async def erased_once() -> list[Any]:
        return [
            e
            for e in await events_of(topics.ORDERS, customer)
            if e.headers["ce_type"] == "fulfilment.customer.erased.v1"
        ]

    published = await eventually(erased_once, until=bool, timeout=30, what="customer erased")
    assert len(published) == 1

    # Every place the data could be: no sentinel in plaintext.
    places: dict[str, bytes] = await topic_bytes()
    for service in platform.services.values():
        places.update(database_bytes(service.database))
    places.update(database_bytes(platform.keys_database))
    places.update({f"log:{n}": platform[n].process.log_text().encode() for n in PROCESSES})
    places["metrics"] = await metrics_text(platform)
    leaks = {where: found_in(blob, values) for where, blob in places.items()}
    assert {w: f for w, f in leaks.items() if f} == {}
    assert any("snapshot" in k for k in places)  # the orders' snapshots were scanned too

    # ... and nothing sealed for this customer opens any more (every service's view of it).
    store = PostgresKeyStore(PostgresSettings(), platform.keys_database)
    vault = PersonalDataVault(
        store, KeyEncryptionKeys.from_settings(PrivacySettings()), ("contact", "payment"), 0
    )
    theirs = {
        m.group().decode()
        for blob in places.values()
        for m in SEALED.finditer(blob)
        if customer.encode() in m.group()
    }
    assert theirs, "the customer's sealed values are still stored (crypto-shredded, not deleted)"
    assert {vault.reveal(v) for v in theirs} == {REDACTED}
    vault.close()

    # The order shows the redaction; money, stock and KPIs are intact.
    view = await platform.get("orders", f"/orders/{order_id}")
    assert view["shipping_address"]["line1"] == REDACTED
    assert view["shipping_address"]["email"] == REDACTED
    assert view["total_minor"] == 3000
    assert view["status"] == "delivered"
    assert await platform.get("inventory", f"/stock/{sku}") == before_stock
    assert (await platform.get("payments", f"/payments/{order_id}"))["captured_minor"] == 3000
    assert await kpis(platform) == before_kpis
    assert "fulfilment.order.delivered.v1" in types_of(await events_of(topics.ORDERS, order_id))

    # The read models rebuild from the topics and from the logs to what is live.
    database = platform["read-models"].database
    for source in (TopicSource(), log_source(platform)):
        report = await rebuild(platform, database, source)
        assert report.equal, (source.name, report.differences)
    assert (await rebuild(platform, database, log_source(platform), "swap")).swapped
    assert await kpis(platform) == before_kpis
    assert (await rebuild(platform, database, TopicSource())).equal
