"""Each deployable's Kafka permissions, derived from the topic and consumer registry.

The one place least privilege is decided: a deployable may write the topic its relay
publishes (and read it: the relay resumes from its tail) under its own transactional id,
write the dead-letter topics of its consumer groups, read the topics those groups consume,
and use those groups. The Kubernetes `KafkaUser` manifests (deploy/k8s) and the local
stack's SCRAM users and ACLs (`python -m fulfilment_kit.messaging.security`) both come
from `access_for`; nothing else lists topics or groups per user.
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
    """The topic its outbox relay publishes (None: a consume-only deployable, the read models)."""
    dead_letters: tuple[str, ...]
    """The DLQ topics its consumer groups write poison records to."""
    reads: tuple[str, ...]
    groups: tuple[str, ...]
    transactional_id: str | None
    """Its relay's (None without a relay)."""

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
        return sorted(rules)


def users() -> list[str]:
    """Every deployable that gets a Kafka user, in a stable order."""
    return sorted(set(topics.PUBLISHES) | set(topics.GROUPS))


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


def all_access(prefix: str | None = None) -> dict[str, Access]:
    """`access_for` every deployable, by user name."""
    return {user: access_for(user, prefix) for user in users()}
