"""The Kafka permissions derivation (`contracts.access`) and its agreement with what each
service actually runs: the registry is the one list, checked against the code."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from customer_service.projections import GROUP as PROJECTIONS_GROUP
from customer_service.projections.main import SERVICE as READ_MODELS
from customer_service.projections.main import create_runtime as read_models_runtime
from fulfilment_kit.contracts import access, topics
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import KafkaSettings, ServiceSettings

MAIN_MODULES = {
    "orders": "orders.main",
    "inventory": "inventory.main",
    "payments": "payments.main",
    "shipping": "shipping.main",
    "customer-service": "customer_service.main",
}


def runtime_of(service: str, tmp_path: Path) -> ServiceRuntime:
    module = importlib.import_module(MAIN_MODULES[service])
    settings = ServiceSettings(persistence="sqlite", sqlite_dir=tmp_path)
    runtime: ServiceRuntime = module.create_runtime(settings)
    return runtime


@pytest.mark.parametrize("service", sorted(MAIN_MODULES))
def test_each_service_runs_exactly_what_the_registry_declares(service: str, tmp_path: Path) -> None:
    runtime = runtime_of(service, tmp_path)
    try:
        assert list(runtime.output_topics) == [topics.PUBLISHES[service]]
        for consumer in runtime.consumers:
            group = consumer.inbox.group_id
            assert group in topics.GROUPS[service], f"{service} runs undeclared group {group}"
            subscribed = [t.name for t in consumer.subscriber.topics] if consumer.subscriber else []
            assert sorted(subscribed) == sorted(topics.physical(t) for t in topics.CONSUMERS[group])
        assert {c.inbox.group_id for c in runtime.consumers} == set(topics.GROUPS[service])
    finally:
        runtime.close()


def test_the_read_models_process_runs_exactly_its_declared_groups() -> None:
    settings = ServiceSettings(persistence="postgres")
    runtime = read_models_runtime(settings, create_tables=False)  # no database contacted
    try:
        assert READ_MODELS not in topics.PUBLISHES  # it consumes only: no relay, no topic
        assert [c.inbox.group_id for c in runtime.consumers] == list(topics.GROUPS[READ_MODELS])
        (consumer,) = runtime.consumers
        subscribed = sorted(t.name for t in consumer.subscriber.topics)
        assert subscribed == sorted(topics.physical(t) for t in topics.ALL)
        assert PROJECTIONS_GROUP not in topics.GROUPS["customer-service"]
    finally:
        runtime.close()


def test_the_read_models_user_reads_every_topic_and_writes_none() -> None:
    grant = access.access_for(READ_MODELS, prefix="p.")
    assert grant.publishes is None
    assert grant.transactional_id is None
    rules = {(a.resource, a.name): a.operations for a in grant.acls()}
    assert rules[("group", f"p.{PROJECTIONS_GROUP}")] == ("Read", "Describe")
    for topic in topics.ALL:
        assert rules[("topic", f"p.{topic}")] == ("Read", "Describe")
    writable = {name for (kind, name), ops in rules.items() if kind == "topic" and "Write" in ops}
    assert writable == {f"p.{t}.dlq.{PROJECTIONS_GROUP}" for t in topics.ALL}
    assert not [kind for kind, _ in rules if kind == "transactionalId"]


def test_the_ops_user_reads_dead_letters_writes_the_audit_and_nothing_else() -> None:
    grant = access.ops_access(prefix="p.")
    assert grant.user == access.OPS == "ops"
    rules = {(a.resource, a.name): a.operations for a in grant.acls()}
    audit = f"p.{topics.OPERATOR_AUDIT}"
    letters = {topics.dlq(f"p.{t}", g) for g, sources in topics.CONSUMERS.items() for t in sources}
    assert {name: ops for (_, name), ops in rules.items() if "Read" in ops} == {
        **dict.fromkeys(letters, ("Read", "Describe")),
        audit: ("Write", "Describe", "Read"),
    }
    writable = {name for (kind, name), ops in rules.items() if "Write" in ops}
    assert writable == {audit}  # no service's topic, no DLQ (a replay goes to the database)
    for topic in topics.ALL:  # accept-gap asks the log start, it never reads the records
        assert rules[("topic", f"p.{topic}")] == ("Describe",)
    assert {kind for kind, _ in rules} == {"topic"}  # no group, no transactional id
    assert set(access.all_access(prefix="p.")) == set(access.principals())
    assert access.all_access(prefix="p.")[access.OPS] == grant


def test_the_ops_user_covers_a_consumer_it_is_given() -> None:
    grant = access.ops_access(prefix="p.", consumers={"tally": (topics.ORDERS,)})
    assert grant.reads == (f"p.{topics.ORDERS}.dlq.tally",)
    assert grant.describes == (f"p.{topics.ORDERS}",)


def test_every_consumer_group_belongs_to_exactly_one_user() -> None:
    owners = [g for groups in topics.GROUPS.values() for g in groups]
    assert sorted(owners) == sorted(topics.CONSUMERS)
    assert sorted(topics.PUBLISHES.values()) == sorted(topics.ALL)
    assert access.users() == sorted({*topics.PUBLISHES, READ_MODELS})


def test_least_privilege_of_orders() -> None:
    grant = access.access_for("orders", prefix="p.")
    rules = {(a.resource, a.name): a.operations for a in grant.acls()}
    assert rules[("topic", "p.fulfilment.orders.v1")] == ("Write", "Describe", "Read")
    assert rules[("transactionalId", "p.fulfil-relay-orders")] == ("Write", "Describe")
    assert rules[("group", "p.orders")] == ("Read", "Describe")
    assert rules[("topic", "p.fulfilment.inventory.v1")] == ("Read", "Describe")
    assert rules[("topic", "p.fulfilment.inventory.v1.dlq.orders")] == ("Write", "Describe")
    # nothing of another service's: its topic to write, its group, its relay id
    assert ("group", "p.inventory") not in rules
    assert ("transactionalId", "p.fulfil-relay-inventory") not in rules
    writable = {name for (kind, name), ops in rules.items() if kind == "topic" and "Write" in ops}
    assert writable == {"p.fulfilment.orders.v1"} | {
        f"p.{t}.dlq.orders" for t in topics.CONSUMERS["orders"]
    }
    assert "p.fulfilment.orders.v1" not in grant.reads


def test_the_relay_and_the_inbox_use_the_derived_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFIL_TOPIC_PREFIX", "x.")
    grant = access.access_for("shipping")
    assert grant.transactional_id == topics.transactional_id("shipping")
    assert set(grant.dead_letters) == {
        topics.dlq(topics.physical(t), "shipping") for t in topics.CONSUMERS["shipping"]
    }
    assert grant.groups == ("x.shipping",)


def test_sasl_settings_reach_every_client_option() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="orders", sasl_password="pw"
    )
    options = settings.client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("orders", "pw")
    security = settings.faststream_security()
    assert type(security).__name__ == "SASLScram512"
    with pytest.raises(ValueError, match="KAFKA_SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT").client_options()
    assert "sasl_mechanism" not in KafkaSettings().client_options()
    assert KafkaSettings().faststream_security() is None


def test_pruning_touches_only_platform_names_of_its_own_prefix() -> None:
    from fulfilment_kit.messaging.security import _ours

    assert _ours("fulfilment.orders.v1", "")
    assert _ours("fulfil-relay-orders", "")
    assert _ours("customer-service-projections", "")
    assert _ours("it-1.fulfilment.orders.v1", "it-1.")
    assert not _ours("it-1.fulfilment.orders.v1", "it-2.")
    assert not _ours("it-1.fulfilment.orders.v1", "")  # another prefix's, left alone
    assert not _ours("someone-elses-topic", "")


async def test_an_authorization_error_at_start_stops_with_a_message_naming_user_and_cause() -> None:
    from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

    from fulfilment_kit.messaging import kafka

    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="shipping", sasl_password="pw"
    )

    async def refused() -> None:
        raise TopicAuthorizationFailedError("p.fulfilment.payments.v1")

    with pytest.raises(kafka.KafkaAccessDenied) as denied:
        await kafka.start_or_refuse(refused(), "starting its consumers", settings)
    message = str(denied.value)
    assert message.startswith("Kafka refused user 'shipping' while starting its consumers")
    assert "TopicAuthorizationFailedError" in message
    assert "p.fulfilment.payments.v1" in message
    assert "fulfilment_kit.contracts.access" in message
    assert "pw" not in message  # never the password

    async def broker_down() -> None:
        raise KafkaConnectionError("down")

    with pytest.raises(KafkaConnectionError):  # an outage is not an authorization error
        await kafka.start_or_refuse(broker_down(), "starting its consumers", settings)
