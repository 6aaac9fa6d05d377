"""Kafka users (SASL/SCRAM) and their ACLs on a broker, from `contracts.access`.

Used by the local stack in SCRAM mode (`deploy/local/stack.sh` with KAFKA_SECURITY=scram)
and by the tests; on Kubernetes, Strimzi's user operator does the same from the
`KafkaUser` manifests generated from the same derivation. Runs with the admin's
credentials (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD of a super user).

    python -m fulfilment_kit.messaging.security apply --passwords FILE [--prefix P]
    python -m fulfilment_kit.messaging.security grant|revoke --prefix P
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from fulfilment_kit.contracts import access, topics
from fulfilment_kit.settings import KafkaSettings

SCRAM_ITERATIONS = 4096
_TIMEOUT_S = 30.0
_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
}
_OPERATION = {
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Describe": AclOperation.DESCRIBE,
}


_ANY_ACL = AclBindingFilter(  # None: any name, principal, host (the stubs say str)
    ResourceType.ANY,
    None,  # type: ignore[arg-type]
    ResourcePatternType.ANY,
    None,  # type: ignore[arg-type]
    None,  # type: ignore[arg-type]
    AclOperation.ANY,
    AclPermissionType.ANY,
)


def admin_client(settings: KafkaSettings | None = None) -> AdminClient:
    """A confluent-kafka admin client with the same connection settings as our clients."""
    options = (settings or KafkaSettings()).client_options()
    config = {
        "bootstrap.servers": options["bootstrap_servers"],
        "security.protocol": options["security_protocol"],
        "log_level": 4,  # warnings and worse (librdkafka's notices on exit are noise)
    }
    if "sasl_mechanism" in options:
        config["sasl.mechanism"] = options["sasl_mechanism"]
        config["sasl.username"] = options["sasl_plain_username"]
        config["sasl.password"] = options["sasl_plain_password"]
    return AdminClient(config)


def acl_bindings(grant: access.Access) -> list[AclBinding]:
    """The broker's ACL bindings for one deployable's access (allow, literal, any host)."""
    return [
        AclBinding(
            _RESOURCE[rule.resource],
            rule.name,
            ResourcePatternType.LITERAL,
            f"User:{grant.user}",
            "*",
            _OPERATION[operation],
            AclPermissionType.ALLOW,
        )
        for rule in grant.acls()
        for operation in rule.operations
    ]


def _wait(futures: Mapping[Any, Future[Any]]) -> None:
    for future in futures.values():
        future.result(timeout=_TIMEOUT_S)


def grant(prefix: str, admin: AdminClient | None = None) -> int:
    """Create every user's ACLs for topic prefix `prefix` (idempotent); returns how many."""
    return grant_access(access.all_access(prefix).values(), admin)


def grant_access(grants: Iterable[access.Access], admin: AdminClient | None = None) -> int:
    """Create the ACLs of `grants` (idempotent) and wait until they are in force."""
    admin = admin or admin_client()
    bindings = [b for a in grants for b in acl_bindings(a)]
    _wait(admin.create_acls(bindings, request_timeout=_TIMEOUT_S))
    _wait_until_in_force(admin, bindings)
    return len(bindings)


def _wait_until_in_force(admin: AdminClient, bindings: Sequence[AclBinding]) -> None:
    """The controller has committed the ACLs; wait until the broker's authorizer has them
    (DescribeAcls answers from it), so a client started next is not refused."""
    wanted = {_key(b) for b in bindings}
    deadline = time.monotonic() + _TIMEOUT_S
    while True:
        present = {_key(b) for b in admin.describe_acls(_ANY_ACL).result(timeout=_TIMEOUT_S)}
        if wanted <= present:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted - present)} ACLs not in force after {_TIMEOUT_S} s")
        time.sleep(0.05)


def _key(b: AclBinding) -> tuple[object, ...]:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation)


def prune(prefix: str, admin: AdminClient | None = None) -> int:
    """Delete our users' ACLs on names of this prefix that the derivation no longer grants
    (a consumer group or topic removed from the registry); returns how many."""
    admin = admin or admin_client()
    wanted = {_key(b) for a in access.all_access(prefix).values() for b in acl_bindings(a)}
    principals = {f"User:{u}" for u in access.principals()}
    stale = [
        b
        for b in admin.describe_acls(_ANY_ACL).result(timeout=_TIMEOUT_S)
        if b.principal in principals and _ours(b.name, prefix) and _key(b) not in wanted
    ]
    if stale:
        _wait(admin.delete_acls([_filter(b) for b in stale], request_timeout=_TIMEOUT_S))
    return len(stale)


def _ours(name: str, prefix: str) -> bool:
    """A platform name (topic, group, transactional id) under exactly this prefix."""
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    return rest.startswith(("fulfilment.", "fulfil-relay-")) or rest in topics.CONSUMERS


def _filter(b: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        b.restype,
        b.name,
        b.resource_pattern_type,
        b.principal,
        b.host,
        b.operation,
        b.permission_type,
    )


def revoke(prefix: str, admin: AdminClient | None = None) -> None:
    """Delete the ACLs `grant(prefix)` created (a test run's own, afterwards)."""
    revoke_access(access.all_access(prefix).values(), admin)


def revoke_access(grants: Iterable[access.Access], admin: AdminClient | None = None) -> None:
    """Delete the ACLs of `grants`."""
    admin = admin or admin_client()
    filters = [_filter(b) for a in grants for b in acl_bindings(a)]
    _wait(admin.delete_acls(filters, request_timeout=_TIMEOUT_S))


def ensure_users(passwords: dict[str, str], admin: AdminClient | None = None) -> None:
    """Create or update the SCRAM-SHA-512 credential of every user in `passwords`."""
    admin = admin or admin_client()
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in sorted(passwords.items())
    ]
    _wait(admin.alter_user_scram_credentials(upserts, request_timeout=_TIMEOUT_S))


def read_passwords(path: Path) -> dict[str, str]:
    """`user=password` lines (a dev-only file the local stack generates)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {user.strip(): password.strip() for user, password in pairs}


def ensure_passwords(path: Path, users: Iterable[str]) -> dict[str, str]:
    """Generate a random password for each user that has none in `path` yet (mode 0600)."""
    passwords = read_passwords(path)
    missing = [u for u in users if u not in passwords]
    if missing:
        passwords.update({u: secrets.token_urlsafe(24) for u in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# Generated by the local stack: dev-only Kafka SCRAM passwords.\n")
            out.writelines(f"{u}={p}\n" for u, p in sorted(passwords.items()))
    return passwords


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fulfilment_kit.messaging.security")
    sub = parser.add_subparsers(dest="command", required=True)
    apply = sub.add_parser("apply", help="create every SCRAM user (ops too) and its ACLs")
    apply.add_argument("--passwords", type=Path, required=True, help="user=password file")
    for name in ("apply", "grant", "revoke"):
        cmd = apply if name == "apply" else sub.add_parser(name, help=f"{name} the ACLs")
        cmd.add_argument("--prefix", default=os.environ.get("FULFIL_TOPIC_PREFIX", ""))
    args = parser.parse_args(argv)
    admin = admin_client()
    if args.command == "apply":
        ensure_users(ensure_passwords(args.passwords, access.principals()), admin)
        granted = grant(args.prefix, admin)
        pruned = prune(args.prefix, admin)
        users = ", ".join(access.principals())
        print(f"kafka users: {users}; acls: {granted} (removed {pruned} stale)")
    elif args.command == "grant":
        print(f"acls: {grant(args.prefix, admin)}")
    else:
        revoke(args.prefix, admin)


if __name__ == "__main__":
    main()
