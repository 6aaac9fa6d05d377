"""Access to the real Kafka broker and PostgreSQL server the integration tests run against."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import TopicPartition

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.settings import KafkaSettings, PostgresSettings


def postgres_admin_dsn() -> str:
    pg = PostgresSettings()
    return f"host={pg.host} port={pg.port} user={pg.user} password={pg.password} dbname=postgres"


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


async def relay_published_all(database: str, service: str) -> bool:
    """Whether `service`'s relay has published every event its store holds now: the position it
    stores after each Kafka commit (at most a second apart) has reached the newest
    notification. Unlike its lag gauge, which keeps its last value after a commit until the
    relay's next read, this cannot report an event committed a moment ago as published."""
    pg = PostgresSettings()
    dsn = f"host={pg.host} port={pg.port} user={pg.user} password={pg.password} dbname={database}"
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        newest = await (
            await conn.execute(f'SELECT max(notification_id) FROM "{service}_events"')
        ).fetchone()
        stored = await (
            await conn.execute(
                "SELECT position FROM fulfil_follower_position WHERE name = %s",
                (f"relay:{service}",),
            )
        ).fetchone()
    if newest is None or newest[0] is None:
        return True  # nothing stored, nothing to publish
    return stored is not None and int(stored[0]) >= int(newest[0])


TEST_KEY_STORE = "fulfil_test_keys"


def shared_key_store() -> str:
    """The key store every test's service processes share (as `make run`'s `fulfil_keys`):
    what orders seals, payments and shipping must be able to open. Created once, kept."""
    with psycopg.connect(postgres_admin_dsn(), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (TEST_KEY_STORE,)
        ).fetchone()
        if exists is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a twin made it
                conn.execute(f'CREATE DATABASE "{TEST_KEY_STORE}"')
    return TEST_KEY_STORE


def drop_database(name: str) -> None:
    with psycopg.connect(postgres_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def delete_topics(names: Sequence[str]) -> None:
    """Delete the topics `names` from the broker (a test run's own, afterwards)."""
    admin = kafka.admin(KafkaSettings())
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


async def assigned_reader(
    topic_names: Sequence[str], **options: Any
) -> tuple[Any, list[TopicPartition]]:
    """A started reader assigned every partition of `topic_names` (`options` go to the kit's
    `kafka.reader`)."""
    consumer = kafka.reader(KafkaSettings(), **options)
    await consumer.start()
    tps: list[TopicPartition] = []
    for topic in topic_names:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps.extend(TopicPartition(topic, p) for p in sorted(parts))
    consumer.assign(tps)
    return consumer, tps


async def read_topic(topic: str) -> list[Record]:
    """Every committed record on `topic` at this moment (read_committed, no group)."""
    consumer, tps = await assigned_reader([topic])
    try:
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Record] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records.extend(_record(r) for r in batch.get(tp, []))
        return records
    finally:
        await consumer.stop()


def _record(r: Any) -> Record:
    headers = {k: v.decode() for k, v in (r.headers or ())}
    return Record(r.topic, r.partition, r.offset, r.key, r.value, headers)


async def end_offsets(topic_names: Sequence[str]) -> dict[tuple[str, int], int]:
    consumer, tps = await assigned_reader(topic_names)
    try:
        ends = await consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def publish(
    *events: IntegrationEvent,
    ce_id: str | None = None,
    correlation_id: str = "test-correlation",
    source: str = "/test",
) -> list[str]:
    """Publish `events` as their relays do: CloudEvents records keyed by order id on their
    (prefixed) topics, one after another; returns their ce_ids."""
    producer = kafka.producer(KafkaSettings())
    await producer.start()
    try:
        ce_ids = []
        for event in events:
            ce_ids.append(ce_id or str(uuid.uuid4()))
            key, value, headers = cloudevents.encode(
                event,
                ce_id=ce_ids[-1],
                source=source,
                time=datetime.now(UTC),
                correlation_id=correlation_id,
                causation_id="test",
            )
            await producer.send_and_wait(
                topics.physical(event.topic), value=value, key=key, headers=headers
            )
        return ce_ids
    finally:
        await producer.stop()


REPO_DIR = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_DIR / "deploy" / "local" / "stack.sh"


def postgres_answers() -> bool:
    try:
        with psycopg.connect(postgres_admin_dsn(), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _stack(command: str) -> None:
    """Run `deploy/local/stack.sh COMMAND` on this checkout's own stack (its state dir and the
    ports in the environment), never anyone else's."""
    subprocess.run(
        ["bash", str(STACK_SCRIPT), command],
        check=True,
        env=dict(os.environ),
        cwd=REPO_DIR,
        capture_output=True,
        timeout=120,
    )


def pg_down() -> None:
    """Stop this stack's PostgreSQL (a fast shutdown: clients see their connections end)."""
    _stack("pg-down")
    if postgres_answers():
        raise AssertionError(
            "PostgreSQL still answers after `stack.sh pg-down`: it is not this stack's own "
            "server, and a test never stops anyone else's"
        )


def pg_up() -> None:
    """Start this stack's PostgreSQL again (same data directory)."""
    _stack("pg-up")


def kafka_down() -> None:
    """Stop this stack's Kafka broker (its data stays; `kafka_up` starts it again)."""
    _stack("kafka-down")


def kafka_up() -> None:
    """Start this stack's Kafka broker again (same data directory) and wait until it answers."""
    _stack("kafka-up")
