"""The operator tools as a new user runs them: `fulfil dlq ...` and `fulfil consumers
accept-gap`, on the real broker and PostgreSQL, against a running consumer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete

from fulfilment_kit.contracts import access, topics
from fulfilment_kit.messaging import kafka, security
from fulfilment_kit.messaging.admin import ensure_topics
from fulfilment_kit.observability import metrics
from fulfilment_kit.operator import dlq
from fulfilment_kit.operator.consumers import OperatorError
from fulfilment_kit.privacy import MASKED
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import KafkaSettings, ServiceSettings
from tests.integration.tally import POISON_SKU, TallyApplication, create_runtime
from tests.integration.test_inbox import placed, produce
from tests.support import kafka_security
from tests.support.polling import eventually
from tests.support.stack import read_topic

REPO = Path(__file__).resolve().parents[2]
FULFIL = Path(sys.executable).with_name("fulfil")


@pytest.fixture
async def tally_group(database: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A tally consumer group the `fulfil` commands find by name (as a service declares it).
    With SCRAM + ACLs, the operators' user may read its DLQ as it reads a registered group's."""
    group = f"tally-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FULFIL_TALLY_GROUP", group)
    monkeypatch.setenv("FULFIL_TALLY_DATABASE", database)
    monkeypatch.setenv(
        "FULFIL_CONSUMER_RUNTIMES", f"{group}=tests.integration.tally:create_runtime"
    )
    monkeypatch.setenv("FULFIL_OPERATOR", "test-operator")
    tally_ops = [access.ops_access(consumers={group: (topics.ORDERS,)})]
    if kafka_security.sasl_enabled():
        await asyncio.to_thread(security.grant_access, tally_ops)
    yield group
    if kafka_security.sasl_enabled():
        await asyncio.to_thread(security.revoke_access, tally_ops)


def fulfil(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the `fulfil` command line as an operator would (a new process; with SCRAM + ACLs
    as the operators' own Kafka user, `ops`)."""
    return subprocess.run(
        [str(FULFIL), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            **kafka_security.service_env(access.OPS),
            **env,
        },
        check=False,
    )


def quick(settings: ServiceSettings | None = None) -> ServiceRuntime:
    return create_runtime(  # type: ignore[no-any-return]
        ServiceSettings(relay_enabled=False, consumer_max_attempts=2, consumer_backoff_s=0.05)
    )


@pytest.fixture
async def running(tally_group: str) -> AsyncIterator[ServiceRuntime]:
    await ensure_topics(
        [
            topics.dlq(topics.physical(topics.ORDERS), tally_group),
            topics.physical(topics.OPERATOR_AUDIT),
        ]
    )
    rt = quick()
    async with rt.running():
        await eventually(rt.health.readiness, until=lambda p: not p, what="ready")
        yield rt


async def count(rt: ServiceRuntime, order_id: uuid.UUID) -> int:
    assert isinstance(rt.app, TallyApplication)
    return await asyncio.to_thread(rt.app.count, order_id)


async def test_a_poison_record_replayed_after_the_fix_is_applied_once_and_a_second_replay_applies_nothing(  # noqa: E501
    running: ServiceRuntime, tally_group: str
) -> None:
    poison = placed(POISON_SKU)
    await produce(poison)
    good = placed()
    await produce(good)
    await eventually(lambda: count(running, good.order_id), until=lambda n: n == 1)
    dlq_topic = topics.dlq(topics.physical(topics.ORDERS), tally_group)
    await eventually(lambda: read_topic(dlq_topic), until=lambda r: len(r) == 1, what="dead")

    listed = await asyncio.to_thread(fulfil, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{tally_group}:"))
    assert "1 open" in line
    assert "handler-failed 1" in line

    shown = await asyncio.to_thread(fulfil, "dlq", "show", tally_group, "--limit", "5")
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout[: shown.stdout.rindex("}") + 1])
    assert entry["reason"] == "handler-failed"
    assert entry["original"]["topic"] == topics.physical(topics.ORDERS)
    assert entry["headers"]["ce_type"] == "fulfilment.order.placed.v1"
    assert entry["payload"]["shipping_address"] == MASKED  # personal data masked
    assert entry["payload"]["lines"][0]["sku"] == POISON_SKU
    assert "1 St" not in shown.stdout

    # Replayed before the fix: it still fails, and stays open.
    still = await asyncio.to_thread(fulfil, "dlq", "replay", tally_group, "--all")
    assert still.returncode == 2, still.stderr
    assert "applied 0, still failing 1" in still.stdout
    assert await count(running, poison.order_id) == 0

    dry = await dlq.replay(tally_group, dry_run=True)  # in-process: the same code, faster
    assert (dry.would_apply, dry.applied) == (1, 0)
    assert await count(running, poison.order_id) == 0

    fixed = {"FULFIL_TALLY_REFUSE_POISON": "false"}  # the handler fixed, by configuration
    replayed = await asyncio.to_thread(fulfil, "dlq", "replay", tally_group, "--all", **fixed)
    assert replayed.returncode == 0, replayed.stderr
    assert "applied 1, still failing 0, already applied 0" in replayed.stdout
    assert await count(running, poison.order_id) == 1

    again = await asyncio.to_thread(fulfil, "dlq", "replay", tally_group, "--all", **fixed)
    assert again.returncode == 0, again.stderr
    assert "nothing to replay" in again.stdout
    letter_id = entry["id"]
    by_id = await asyncio.to_thread(
        fulfil, "dlq", "replay", tally_group, "--id", letter_id, **fixed
    )
    assert "applied 0, still failing 0, already applied 1" in by_id.stdout
    assert await count(running, poison.order_id) == 1  # applied once, whatever is replayed

    listed = await asyncio.to_thread(fulfil, "dlq", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{tally_group}:"))
    assert "0 open" in line
    assert "1 resolved" in line


async def test_a_dead_letter_is_discarded_only_with_a_reason_on_the_audit_topic(
    running: ServiceRuntime, tally_group: str
) -> None:
    await produce(placed(POISON_SKU))
    dlq_topic = topics.dlq(topics.physical(topics.ORDERS), tally_group)
    dead = await eventually(lambda: read_topic(dlq_topic), until=lambda r: len(r) == 1)
    letter_id = f"{topics.ORDERS}:{dead[0].partition}:{dead[0].offset}"

    with pytest.raises(OperatorError, match="reason"):
        await dlq.discard(tally_group, [letter_id], reason=" ")  # no reason, no discard
    done = await asyncio.to_thread(
        fulfil, "dlq", "discard", tally_group, "--id", letter_id, "--reason", "duplicate test order"
    )
    assert done.returncode == 0, done.stderr
    audit = await read_topic(topics.physical(topics.OPERATOR_AUDIT))
    events = [json.loads(r.value or b"{}") for r in audit]
    discarded = [e for e in events if e["action"] == "discarded" and e["consumer"] == tally_group]
    assert discarded[0]["id"] == letter_id
    assert discarded[0]["reason"] == "duplicate test order"
    assert discarded[0]["operator"] == "test-operator"
    assert len(await read_topic(dlq_topic)) == 1  # the record itself is kept
    (summary,) = [s for s in await dlq.summary() if s.consumer == tally_group]
    assert (summary.open, summary.resolved) == (0, 1)


async def delete_before(tp: TopicPartition, offset: int) -> None:
    """What retention does: delete every record of `tp` before `offset`."""
    admin = kafka.admin(KafkaSettings())  # the broker's admin in SCRAM mode
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=offset)})
    finally:
        await admin.close()


async def test_a_retention_gap_stops_the_partition_until_an_operator_accepts_it(
    tally_group: str,
) -> None:
    await ensure_topics(
        [
            topics.dlq(topics.physical(topics.ORDERS), tally_group),
            topics.physical(topics.OPERATOR_AUDIT),
        ]
    )
    topic = topics.physical(topics.ORDERS)
    tp = TopicPartition(topic, 0)
    rt = quick()
    async with rt.running():
        await eventually(rt.health.readiness, until=lambda p: not p, what="ready")
        applied = placed()
        await produce(applied)
        await eventually(lambda: count(rt, applied.order_id), until=lambda n: n == 1)

    lost = [placed(), placed()]
    for event in lost:
        await produce(event)
    survivor = placed()
    survivor_offset = await produce(survivor)
    await delete_before(tp, survivor_offset)  # the consumer was down longer than retention

    gap = metrics.INBOX_RETENTION_GAP.labels(tally_group, topic, "0")
    blocked = metrics.INBOX_PARTITION_BLOCKED.labels(tally_group, topic, "0", "gap")
    rt = quick()
    async with rt.running():

        async def gap_size() -> float:
            return float(gap._value.get())

        assert await eventually(gap_size, until=lambda n: n == 2, what="gap metric") == 2
        assert blocked._value.get() == 1
        assert await count(rt, survivor.order_id) == 0  # never resumed silently
        other = placed()
        await produce(other, partition=1)  # the other partitions flow
        await eventually(lambda: count(rt, other.order_id), until=lambda n: n == 1)

        accepted = await asyncio.to_thread(
            fulfil, "consumers", "accept-gap", tally_group, topic, "0", "--reason", "restored"
        )
        assert accepted.returncode == 0, accepted.stderr
        assert "2 records given up" in accepted.stdout
        await eventually(
            lambda: count(rt, survivor.order_id), until=lambda n: n == 1, what="resumed"
        )
        assert gap._value.get() == 0
        assert blocked._value.get() == 0
        assert [await count(rt, e.order_id) for e in lost] == [0, 0]
    audit = await read_topic(topics.physical(topics.OPERATOR_AUDIT))
    events = [json.loads(r.value or b"{}") for r in audit]
    accepted_events = [e for e in events if e["action"] == "gap-accepted"]
    assert accepted_events[0]["lost_records"] == 2
    assert accepted_events[0]["reason"] == "restored"
