"""Each deployable's Kafka permissions, derived from the topic and consumer registry.

The one place least privilege is decided: a deployable may write the topic its relay
publishes (and read it: the relay resumes from its tail) under its own transactional id,
write the dead-letter topics of its consumer groups, read the topics those groups consume,
and use those groups. The operators' tools (`fulfil dlq`, `fulfil consumers`) run as user
`ops` (`ops_access`): read every DLQ topic, read and write the audit topic, see the source
topics' offsets (not their records), and nothing else: no group, no service's topic to write.
The Kubernetes `KafkaUser` manifests (deploy/k8s) and the local stack's SCRAM users and ACLs
(`python -m fulfilment_kit.messaging.security`) both come from `all_access`; nothing else
lists topics or groups per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fulfilment_kit.contracts import topics

ResourceType = Literal["topic", "group", "transactionalId"]
Operation = Literal["Read", "Write", "Describe"]


@dataclass(frozen=True, order=True)
class Acl:
    """One allow rule: `operations` on one literal resource name (deployment prefix included)."""

    resource: ResourceType
    name: str
    operations: tuple[Operation, ...]


@dataclass(frozen=True)
class Access:
    """What one deployable's Kafka user may do, as physical names on the broker."""

    user: str
    publishes: str | None
    """The topic its outbox relay publishes (None: a consume-only deployable, the read models;
    the operators' audit topic for `OPS`)."""
    dead_letters: tuple[str, ...]
    """The DLQ topics its consumer groups write poison records to."""
    reads: tuple[str, ...]
    groups: tuple[str, ...]
    transactional_id: str | None
    """Its relay's (None without a relay)."""
    describes: tuple[str, ...] = ()
    """Topics whose metadata and offsets it may see without reading their records."""

    def acls(self) -> list[Acl]:
        """The allow rules, sorted: everything not listed here is denied."""
        rules = []
        if self.publishes is not None:
            rules.append(Acl("topic", self.publishes, ("Write", "Describe", "Read")))
        if self.transactional_id is not None:
            rules.append(Acl("transactionalId", self.transactional_id, ("Write", "Describe")))
        rules += [Acl("topic", t, ("Write", "Describe")) for t in self.dead_letters]
        rules += [Acl("topic", t, ("Read", "Describe")) for t in self.reads if t != self.publishes]
        rules += [Acl("group", g, ("Read", "Describe")) for g in self.groups]
        rules += [Acl("topic", t, ("Describe",)) for t in self.describes]
        return sorted(rules)


OPS = "ops"
"""The Kafka user of the operators' tools (`fulfil dlq`, `fulfil consumers`)."""


def users() -> list[str]:
    """Every deployable that gets a Kafka user, in a stable order."""
    return sorted(set(topics.PUBLISHES) | set(topics.GROUPS))


def principals() -> list[str]:
    """Every Kafka user of the platform: the deployables' and the operators' (`OPS`)."""
    return [*users(), OPS]


def access_for(service: str, prefix: str | None = None) -> Access:
    """The permissions of `service` under a topic prefix (default: FULFIL_TOPIC_PREFIX)."""
    prefix = topics.prefix() if prefix is None else prefix
    groups = topics.GROUPS.get(service, ())
    unknown = [g for g in groups if g not in topics.CONSUMERS]
    if unknown:
        raise KeyError(f"{service} runs consumer groups missing from topics.CONSUMERS: {unknown}")
    reads = sorted({f"{prefix}{t}" for g in groups for t in topics.CONSUMERS[g]})
    dead_letters = sorted(
        {topics.dlq(f"{prefix}{t}", g) for g in groups for t in topics.CONSUMERS[g]}
    )
    publishes = topics.PUBLISHES.get(service)
    return Access(
        user=service,
        publishes=None if publishes is None else f"{prefix}{publishes}",
        dead_letters=tuple(dead_letters),
        reads=tuple(reads),
        groups=tuple(f"{prefix}{g}" for g in groups),
        transactional_id=None if publishes is None else topics.transactional_id(service, prefix),
    )


def ops_access(
    prefix: str | None = None, consumers: dict[str, tuple[str, ...]] | None = None
) -> Access:
    """The operators' tools: `fulfil dlq` reads the DLQ topics of `consumers` (default: every
    registered consumer group) and records what it did on the audit topic (which it reads back
    to know what is resolved); `fulfil consumers accept-gap` asks a source topic's log start.
    Replays go through the consumer's inbox in its database, not through Kafka."""
    prefix = topics.prefix() if prefix is None else prefix
    consumers = topics.CONSUMERS if consumers is None else consumers
    sources = {f"{prefix}{t}" for ts in consumers.values() for t in ts}
    letters = {topics.dlq(f"{prefix}{t}", g) for g, ts in consumers.items() for t in ts}
    return Access(
        user=OPS,
        publishes=f"{prefix}{topics.OPERATOR_AUDIT}",
        dead_letters=(),
        reads=tuple(sorted(letters)),
        groups=(),
        transactional_id=None,
        describes=tuple(sorted(sources)),
    )


def all_access(prefix: str | None = None) -> dict[str, Access]:
    """The access of every Kafka user (`access_for` each deployable, and `ops_access`)."""
    grants = {user: access_for(user, prefix) for user in users()}
    grants[OPS] = ops_access(prefix)
    return grants
