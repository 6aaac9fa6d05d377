"""The DLQ an operator can work: list, show (personal data masked), replay, discard.

Dead letters stay on their topics (kept forever); what happened to each is recorded on the
operator audit topic: `replayed` (applied through the consumer's own inbox, at most once) or
`discarded` (with a reason). A record with neither is open.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.inbox import DeadLetter, ReplayOutcome
from fulfilment_kit.operator.consumers import OperatorError, audit, consumer_inbox
from fulfilment_kit.privacy.masking import mask_personal, mask_text
from fulfilment_kit.settings import KafkaSettings


@dataclass(frozen=True)
class Letter:
    """One record on a DLQ topic."""

    consumer: str
    dlq_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    raw_headers: tuple[tuple[str, bytes], ...]

    @property
    def id(self) -> str:
        """`<source topic>:<dlq partition>:<dlq offset>`: stable, and short enough to type."""
        return f"{logical(self.source_topic)}:{self.partition}:{self.offset}"

    @property
    def source_topic(self) -> str:
        return self.headers.get("dlq_original_topic", "")

    @property
    def reason(self) -> str:
        return self.headers.get("dlq_reason", "unknown")

    @property
    def failed_at(self) -> str:
        return self.headers.get("dlq_failed_at", "")

    def dead_letter(self) -> DeadLetter:
        """The record as it was on its source topic (without the DLQ's own headers)."""
        return DeadLetter(
            topic=self.source_topic,
            partition=int(self.headers.get("dlq_original_partition", "0")),
            offset=int(self.headers.get("dlq_original_offset", "-1")),
            value=self.value,
            headers=[(k, v) for k, v in self.raw_headers if not k.startswith("dlq_")],
        )


@dataclass
class Resolution:
    action: str  # replayed | discarded
    at: str
    operator: str
    reason: str = ""


@dataclass
class ConsumerSummary:
    consumer: str
    open: int = 0
    resolved: int = 0
    oldest: str = ""
    reasons: Counter[str] = field(default_factory=Counter)


def logical(topic: str) -> str:
    prefix = topics.prefix()
    return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic


async def _topic_names() -> list[str]:
    admin = kafka.admin(KafkaSettings())
    await admin.start()
    try:
        names: list[str] = await admin.list_topics()
        return names
    finally:
        await admin.close()


async def dlq_topics(consumer: str | None = None) -> dict[str, list[str]]:
    """DLQ topics of this deployment (the topic prefix), by consumer."""
    prefix = topics.prefix()
    found: dict[str, list[str]] = {}
    for name in sorted(await _topic_names()):
        if not name.startswith(prefix) or ".dlq." not in name:
            continue
        owner = name.rsplit(".dlq.", 1)[1]
        if consumer is None or owner == consumer:
            found.setdefault(owner, []).append(name)
    return found


async def _read(names: Sequence[str]) -> list[Any]:
    """Every committed record on `names` now (no consumer group)."""
    if not names:
        return []
    reader = kafka.reader(KafkaSettings())
    await reader.start()
    try:
        tps: list[TopicPartition] = []
        for name in names:
            parts = reader.partitions_for_topic(name)
            if not parts:
                await reader._client.force_metadata_update()
                parts = reader.partitions_for_topic(name) or set()
            tps.extend(TopicPartition(name, p) for p in sorted(parts))
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
        records: list[Any] = []
        for tp in tps:
            if ends[tp] <= starts[tp]:
                continue
            reader.seek(tp, starts[tp])
            while await reader.position(tp) < ends[tp]:
                batch = await reader.getmany(tp, timeout_ms=1000)
                records.extend(batch.get(tp, []))
        return records
    finally:
        await reader.stop()


async def letters(consumer: str | None = None) -> list[Letter]:
    """Every dead letter of `consumer` (or of all consumers), oldest first."""
    by_consumer = await dlq_topics(consumer)
    found: list[Letter] = []
    for owner, names in by_consumer.items():
        for r in await _read(names):
            raw = tuple(r.headers or ())
            headers = {k: v.decode(errors="replace") for k, v in raw}
            found.append(
                Letter(owner, r.topic, r.partition, r.offset, r.key, r.value, headers, raw)
            )
    return sorted(found, key=lambda letter: (letter.failed_at, letter.id))


async def resolutions() -> dict[tuple[str, str], Resolution]:
    """What operators did to dead letters, by (consumer, letter id); the latest counts."""
    done: dict[tuple[str, str], Resolution] = {}
    audit_topic = topics.physical(topics.OPERATOR_AUDIT)
    if audit_topic not in await _topic_names():
        return done
    for r in await _read([audit_topic]):
        try:
            body = json.loads(r.value)
        except (TypeError, ValueError):
            continue
        if body.get("action") in ("replayed", "discarded") and body.get("id"):
            done[(body["consumer"], body["id"])] = Resolution(
                body["action"], body.get("at", ""), body.get("operator", ""), body.get("reason", "")
            )
    return done


async def summary() -> list[ConsumerSummary]:
    """Per consumer: open letters, the oldest open one, and their reasons."""
    done = await resolutions()
    summaries: dict[str, ConsumerSummary] = {}
    for letter in await letters():
        entry = summaries.setdefault(letter.consumer, ConsumerSummary(letter.consumer))
        if (letter.consumer, letter.id) in done:
            entry.resolved += 1
            continue
        entry.open += 1
        entry.reasons[letter.reason] += 1
        entry.oldest = entry.oldest or letter.failed_at
    return sorted(summaries.values(), key=lambda s: s.consumer)


def mask_payload(value: bytes | None) -> Any:
    """The payload with personal data (names, addresses, email, phone, tokens) masked."""
    if value is None:
        return None
    try:
        document = json.loads(value)
    except ValueError:
        return f"<{len(value)} bytes, not JSON: not shown>"
    return mask_personal(document)


def shown(letter: Letter) -> dict[str, Any]:
    """What `fulfil dlq show` prints of one letter."""
    headers = {
        k: (mask_text(v) if k == "dlq_error" else v)
        for k, v in letter.headers.items()
        if k.startswith(("ce_", "dlq_", "content-type", "traceparent"))
    }
    return {
        "id": letter.id,
        "reason": letter.reason,
        "original": {
            "topic": letter.source_topic,
            "partition": letter.headers.get("dlq_original_partition"),
            "offset": letter.headers.get("dlq_original_offset"),
        },
        "dlq": {"topic": letter.dlq_topic, "partition": letter.partition, "offset": letter.offset},
        "headers": headers,
        "payload": mask_payload(letter.value),
    }


@dataclass
class ReplayReport:
    applied: int = 0
    already_applied: int = 0
    still_failing: int = 0
    skipped_discarded: int = 0
    would_apply: int = 0
    outcomes: list[tuple[str, str]] = field(default_factory=list)


def select(
    found: Iterable[Letter],
    done: dict[tuple[str, str], Resolution],
    ids: Sequence[str],
    consumer: str,
) -> list[Letter]:
    """`--id` picks exactly those (even if replayed before); `--all` every open one."""
    candidates = [letter for letter in found if letter.consumer == consumer]
    if not ids:
        return [letter for letter in candidates if (consumer, letter.id) not in done]
    by_id = {letter.id: letter for letter in candidates}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise OperatorError(f"no dead letter {', '.join(missing)} for {consumer}")
    return [by_id[i] for i in ids]


async def replay(
    consumer: str,
    ids: Sequence[str] = (),
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Put dead letters back through `consumer`'s own inbox; each is applied at most once."""
    done = await resolutions()
    chosen = select(await letters(consumer), done, ids, consumer)
    report = ReplayReport()
    with consumer_inbox(consumer) as inbox:
        for index, letter in enumerate(chosen, start=1):
            resolution = done.get((consumer, letter.id))
            outcome: ReplayOutcome | str
            if resolution is not None and resolution.action == "discarded":
                outcome = "discarded"
                report.skipped_discarded += 1
            elif dry_run:
                applied = await inbox.replayed(letter.dead_letter())
                outcome = "already-applied" if applied else "would-apply"
                if applied:
                    report.already_applied += 1
                else:
                    report.would_apply += 1
            else:
                outcome = await inbox.replay(letter.dead_letter())
                if outcome == "applied":
                    report.applied += 1
                elif outcome == "already-applied":
                    report.already_applied += 1
                else:
                    report.still_failing += 1
                if outcome != "still-failing" and resolution is None:
                    await audit("replayed", consumer, id=letter.id, outcome=outcome)
            report.outcomes.append((letter.id, outcome))
            if progress is not None:
                progress(index, len(chosen))
    return report


async def discard(consumer: str, ids: Sequence[str], reason: str) -> list[str]:
    """Give dead letters up on the record: each gets a `discarded` audit event with `reason`."""
    if not reason.strip():
        raise OperatorError("a discard needs a --reason")
    chosen = select(await letters(consumer), {}, ids, consumer)
    for letter in chosen:
        await audit("discarded", consumer, id=letter.id, reason=reason, dlq_reason=letter.reason)
    return [letter.id for letter in chosen]
