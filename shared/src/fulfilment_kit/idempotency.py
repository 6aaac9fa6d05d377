"""Idempotent commands: one request fingerprint and one rule for replaying under concurrency.

A command with an `Idempotency-Key` records its effect and what identifies the request (the
resource the key names, or a marker) in one transaction. Identical requests racing each other
all read that record: whoever commits first wins, and every other one, whatever stopped it (an
optimistic-concurrency conflict, or a refusal caused by the winner's own effect, e.g. "a return
of these units is already open"), looks for the winner's record again and answers with it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from eventsourcing.persistence import IntegrityError
from pydantic import BaseModel

from fulfilment_kit.commands import COMMAND_ATTEMPTS, ConcurrentUpdate, IdempotencyConflict, gave_up

__all__ = [
    "ConcurrentUpdate",
    "IdempotencyConflict",
    "Outcome",
    "check_fingerprint",
    "fingerprint",
    "key_id",
    "recorded",
    "run_idempotently",
]

T = TypeVar("T")


class Fingerprinted(Protocol):
    """What a keyed command recorded: it keeps the fingerprint of the request that made it."""

    @property
    def request_fingerprint(self) -> str | None: ...


F = TypeVar("F", bound=Fingerprinted)


def fingerprint(*parts: str | BaseModel) -> str:
    """What identifies a request: a digest of its operation, target and body (joined by ':',
    so fingerprints stored before the kit had this function still match)."""
    text = ":".join(p.model_dump_json() if isinstance(p, BaseModel) else p for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def check_fingerprint(stored: str | None, given: str) -> None:
    """Raise IdempotencyConflict when the key came before with another request."""
    if stored != given:
        # The key is not quoted: the API passes the caller-scoped digest of the client's key.
        raise IdempotencyConflict("this Idempotency-Key was already used for a different request")


def key_id(key: str | None, derive: Callable[[str], uuid.UUID]) -> uuid.UUID:
    """The id of a command's effect: derived from its Idempotency-Key (a repeat finds it), or
    a new one without a key."""
    return uuid.uuid4() if key is None else derive(key)


def recorded(found: F | None, given: str) -> F | None:
    """What the key's first request recorded (`found`; None: nothing yet), provided `given` is
    that request's fingerprint (else IdempotencyConflict): a `replay` of `run_idempotently`."""
    if found is not None:
        check_fingerprint(found.request_fingerprint, given)
    return found


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """A command's result, and whether this call applied it (False: the first one's replay)."""

    result: T
    applied: bool


def run_idempotently(
    *,
    replay: Callable[[], T | None],
    attempt: Callable[[], T],
    attempts: int = COMMAND_ATTEMPTS,
    what: str = "the aggregates",
    replay_first: bool = True,
) -> Outcome[T]:
    """Run `attempt` once per key, replaying the first result to every identical request.

    `replay()` returns the result recorded for the key (raising IdempotencyConflict when the
    key came with another request) or None. `attempt()` checks, changes and saves, atomically
    with what `replay` reads; it raises IntegrityError when a concurrent write won. Whatever
    `attempt` raises, a result recorded for the key meanwhile is the answer; after `attempts`
    conflicts, ConcurrentUpdate names `what` kept changing.

    `replay_first=False` is for an `attempt` that only creates what the key names (an
    aggregate whose id derives from the key): a repeat's attempt fails on that id (an
    IntegrityError, or a refusal) and the replay answers, so the attempt may go first and
    a new key costs no read.
    """
    for tried in range(attempts):
        if replay_first or tried > 0:
            first = replay()
            if first is not None:
                return Outcome(first, applied=False)
        try:
            return Outcome(attempt(), applied=True)
        except IntegrityError:
            continue  # a concurrent write won: replay it, or try again on the new state
        except Exception:
            first = replay()
            if first is not None:
                return Outcome(first, applied=False)
            raise
    first = replay()
    if first is not None:
        return Outcome(first, applied=False)
    raise gave_up(what)
