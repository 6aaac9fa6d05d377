"""Kafka SASL/SCRAM + ACLs on the real broker (`make test-scram`): each service's own user
can do what `contracts.access` derives for it and nothing else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from fulfilment_kit.contracts import OrderLine, OrderPlaced, ShippingAddress, access, topics
from fulfilment_kit.messaging import kafka, security
from fulfilment_kit.settings import KafkaSettings
from tests.support import kafka_security
from tests.support.polling import eventually
from tests.support.processes import (
    ServiceProcess,
    free_port,
    running_service,
    service_command,
    service_env,
)
from tests.support.stack import Record, publish, read_topic

pytestmark = pytest.mark.kafka_security

USERS = access.users()
PUBLISHERS = [u for u in USERS if access.access_for(u, prefix="").publishes is not None]
"""Users with a relay (all but the read models, which only consume)."""


@pytest.fixture(autouse=True)
def _scram_mode() -> None:
    if not kafka_security.sasl_enabled():
        pytest.fail(
            "these tests need the SCRAM + ACL broker: run them with `make test-scram`",
            pytrace=False,
        )


def other(user: str) -> str:
    return USERS[(USERS.index(user) + 1) % len(USERS)]


async def send_as(user: str, topic: str, *, password: str | None = None) -> None:
    producer = kafka.producer(kafka_security.settings_as(user, password))
    await asyncio.wait_for(producer.start(), 15)
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"k"), 15)
    finally:
        await asyncio.wait_for(producer.stop(), 10)


async def test_the_brokers_acls_are_the_derived_ones() -> None:
    prefix = topics.prefix()
    admin = security.admin_client()
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    found = await asyncio.to_thread(lambda: admin.describe_acls(everything).result(timeout=30))
    ours = {str(b) for b in found if b.name.startswith(prefix)}
    derived = {str(b) for a in access.all_access(prefix).values() for b in security.acl_bindings(a)}
    assert ours == derived
    assert len(derived) > 5 * len(USERS)


async def test_a_service_produces_to_its_own_topic_and_to_no_other_services() -> None:
    for user in USERS:  # one test (one topic set) for all: each test's setup costs seconds
        mine = access.access_for(user)
        if mine.publishes is not None:
            await send_as(user, mine.publishes)
        await send_as(user, mine.dead_letters[0])
        for owner in PUBLISHERS:
            if owner == user:
                continue
            theirs = access.access_for(owner).publishes
            assert theirs is not None
            with pytest.raises(TopicAuthorizationFailedError):
                await send_as(user, theirs)


async def test_a_service_joins_its_own_group_and_not_another_services() -> None:
    for user in USERS:
        await _joins_only_its_own_groups(user)


async def join_as(settings: KafkaSettings, topic: str, group: str) -> None:
    """Join `group` on `topic` until partitions are assigned (raises what was refused)."""
    consumer = AIOKafkaConsumer(
        topic, **settings.client_options(), group_id=group, enable_auto_commit=False
    )

    async def assigned() -> set[object]:
        await consumer.getmany(timeout_ms=200)  # raises what the coordinator refused
        return set(consumer.assignment())

    try:
        await asyncio.wait_for(consumer.start(), 15)
        await eventually(assigned, what=f"{group} assigned")
    finally:
        await consumer.stop()


async def _joins_only_its_own_groups(user: str) -> None:
    mine = access.access_for(user)
    settings = kafka_security.settings_as(user)
    topic = mine.reads[0]
    await join_as(settings, topic, mine.groups[0])
    for group in access.access_for(other(user)).groups:
        with pytest.raises(GroupAuthorizationFailedError):
            await join_as(settings, topic, group)


async def test_a_service_cannot_read_a_topic_it_does_not_consume() -> None:
    shipping = access.access_for("shipping")
    forbidden = topics.physical(topics.INVENTORY)
    assert forbidden not in shipping.reads
    consumer = AIOKafkaConsumer(
        forbidden,
        **kafka_security.settings_as("shipping").client_options(),
        group_id=shipping.groups[0],  # its own group: only the topic is not its to read
        enable_auto_commit=False,
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(consumer.start(), 15)
    finally:
        await consumer.stop()


async def test_a_relay_cannot_take_another_services_transactional_id() -> None:
    for user in USERS:
        settings = kafka_security.settings_as(user)
        mine = access.access_for(user).transactional_id
        if mine is not None:  # the read models have no relay: no transactional id at all
            own = kafka.producer(settings, transactional_id=mine)
            await asyncio.wait_for(own.start(), 15)
            await own.stop()
        owner = next(u for u in PUBLISHERS if u != user)
        theirs = access.access_for(owner).transactional_id
        foreign = kafka.producer(settings, transactional_id=theirs)
        try:
            with pytest.raises(TransactionalIdAuthorizationFailed):
                await asyncio.wait_for(foreign.start(), 15)
        finally:
            await foreign.stop()


async def test_a_wrong_password_gets_no_connection() -> None:
    with pytest.raises(KafkaConnectionError):
        await send_as("orders", topics.physical(topics.ORDERS), password="not-it")


async def read_as(user: str, topic: str) -> list[bytes | None]:
    """Every record of `topic`, read as `user` (no group)."""
    reader = kafka.reader(kafka_security.settings_as(user))
    await asyncio.wait_for(reader.start(), 15)
    try:
        tps = [TopicPartition(topic, p) for p in range(KafkaSettings().topic_partitions)]
        reader.assign(tps)
        ends = await asyncio.wait_for(reader.end_offsets(tps), 15)
        await reader.seek_to_beginning(*tps)
        values: list[bytes | None] = []
        async with asyncio.timeout(30):
            for tp in tps:
                while await reader.position(tp) < ends[tp]:
                    batch = await reader.getmany(tp, timeout_ms=1000)
                    values.extend(r.value for r in batch.get(tp, []))
        return values
    finally:
        await reader.stop()


async def test_the_ops_user_works_dead_letters_and_the_audit_and_touches_nothing_else() -> None:
    ops = access.ops_access()
    assert ops.user == access.OPS
    letters = topics.dlq(topics.physical(topics.ORDERS), "inventory")
    admin = kafka.producer(KafkaSettings())  # the test is the admin: a poison record
    await admin.start()
    try:
        await admin.send_and_wait(letters, b"poison", key=b"k", partition=0)
        await admin.send_and_wait(topics.physical(topics.ORDERS), b"{}", key=b"k", partition=0)
    finally:
        await admin.stop()

    assert await read_as(access.OPS, letters) == [b"poison"]  # fulfil dlq list / show
    audit = topics.physical(topics.OPERATOR_AUDIT)
    await send_as(access.OPS, audit)  # fulfil dlq discard / replay record what they did
    assert await read_as(access.OPS, audit) == [b"{}"]

    source = TopicPartition(topics.physical(topics.ORDERS), 0)
    reader = kafka.reader(kafka_security.settings_as(access.OPS))
    await asyncio.wait_for(reader.start(), 15)
    try:  # fulfil consumers accept-gap: the log start, never the records
        assert (await asyncio.wait_for(reader.beginning_offsets([source]), 15))[source] == 0
    finally:
        await reader.stop()
    with pytest.raises(TopicAuthorizationFailedError):
        await read_as(access.OPS, source.topic)

    for user in PUBLISHERS:  # no service's topic to write, nor a DLQ (replays go to the DB)
        publishes = access.access_for(user).publishes
        assert publishes is not None
        with pytest.raises(TopicAuthorizationFailedError):
            await send_as(access.OPS, publishes)
    with pytest.raises(TopicAuthorizationFailedError):
        await send_as(access.OPS, letters)
    with pytest.raises(GroupAuthorizationFailedError):  # nor any consumer group
        await join_as(kafka_security.settings_as(access.OPS), letters, topics.physical("orders"))


async def test_a_service_with_another_services_credentials_stops_at_once_saying_why(
    database: str,
) -> None:
    """An authorization error is configuration, not an outage: the process exits (no retry
    loop, no hang) and its log names the user, what was refused and where ACLs come from."""
    port = free_port()
    env = service_env(
        POSTGRES_DBNAME=database,
        FULFIL_HTTP_PORT=str(port),
        **kafka_security.service_env("shipping"),  # orders' process, shipping's user
    )
    process = ServiceProcess(service_command("fulfil-orders"), env, f"orders-as-shipping-{port}")
    process.start()
    try:

        async def exited() -> int | None:
            assert process.proc is not None
            return process.proc.poll()

        code = await eventually(exited, until=lambda c: c is not None, timeout=90, what="exit")
        assert code != 0
        log = process.log_text()
        assert "kafka access denied" in log
        assert "Kafka refused user 'shipping' while starting its consumers" in log
        assert "AuthorizationFailed" in log
        assert "fulfilment_kit.contracts.access" in log
    finally:
        process.stop()


@pytest.fixture
async def inventory_as_itself(database: str) -> AsyncIterator[None]:
    async with running_service("inventory", database):
        yield


def placed_order(sku: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku=sku, quantity=1, unit_price_minor=100)],
        currency="EUR",
        total_minor=100,
        shipping_address=ShippingAddress(
            recipient_name="A", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
        ),
        placed_at=datetime.now(UTC),
    )


async def records(topic: str, key: bytes) -> list[Record]:
    return [r for r in await read_topic(topic) if r.key == key]


async def test_a_service_under_its_own_user_consumes_publishes_and_dead_letters(
    inventory_as_itself: None,
) -> None:
    order = placed_order(f"SKU-{uuid.uuid4().hex[:6].upper()}")
    await publish(order, source="/fulfilment/orders")
    key = str(order.order_id).encode()
    [rejected] = await eventually(
        lambda: records(topics.physical(topics.INVENTORY), key), what="inventory's answer"
    )
    assert rejected.headers["ce_type"] == "fulfilment.stock.rejected.v1"

    producer = kafka.producer(KafkaSettings())  # the test is the admin
    await producer.start()
    try:
        await producer.send_and_wait(topics.physical(topics.ORDERS), b"not json", key=b"poison")
    finally:
        await producer.stop()
    dlq = topics.dlq(topics.physical(topics.ORDERS), "inventory")
    [dead] = await eventually(lambda: records(dlq, b"poison"), what="poison dead-lettered")
    assert dead.headers["dlq_consumer"] == "inventory"
