"""Commands: the one retry on an optimistic-concurrency conflict, and the errors commands raise.

A command loads aggregates, changes them and saves them. A concurrent write of the same
aggregates makes the save raise IntegrityError; `execute` then runs the whole change again on
the new state, up to `attempts` times, and gives up with `ConcurrentUpdate`.

Every error a command raises on purpose is a `CommandError`: its class names the HTTP status
and title, and the kit's HTTP app answers every one as problem+json in one place
(`fulfilment_kit.http.errors`), so routes catch nothing. Services subclass the four kinds:
`NotFound` (404), `StateConflict` (409), `InvalidCommand` (422), `DependencyFailed` (502)
and `DependencyUnavailable` (503).
This module imports no framework: domain modules may raise these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import structlog
from eventsourcing.persistence import IntegrityError

log = structlog.get_logger(__name__)

T = TypeVar("T")

COMMAND_ATTEMPTS = 5
"""How often a command runs before it gives up on a concurrent write (ConcurrentUpdate)."""


class CommandError(Exception):
    """A command refused; `http_status`, `title`, `detail` and `extra` make its problem+json."""

    http_status: ClassVar[int] = 409
    title: ClassVar[str] = "Conflict"
    detail_format: ClassVar[str] = "{}"
    """The problem's detail, `{}` standing for the message the error was raised with."""

    @property
    def detail(self) -> str:
        return self.detail_format.format(self)

    @property
    def extra(self) -> dict[str, Any]:
        """More members of the problem body (e.g. `errors`, `refundable_minor`)."""
        return {}


class StateConflict(CommandError):
    """The current state does not allow the command: 409."""


class ConcurrentUpdate(StateConflict):
    """The command kept conflicting with concurrent writes of the same aggregates."""


class IdempotencyConflict(StateConflict):
    """The Idempotency-Key was used before with a different request."""


class NotFound(CommandError, LookupError):
    """What the command or query names does not exist: 404 "<what> <identifier> does not
    exist". `str()` stays the identifier (or the message) it was raised with."""

    http_status = 404
    title = "Not found"
    what: ClassVar[str] = "resource"

    def __init_subclass__(cls, *, what: str | None = None, **kwargs: Any) -> None:
        """`class SkuNotFound(NotFound, what="SKU"): ...` names what does not exist."""
        super().__init_subclass__(**kwargs)
        if what is not None:
            cls.what = what

    def __init__(self, identifier: object) -> None:
        super().__init__(str(identifier))
        self.identifier = identifier

    @property
    def detail(self) -> str:
        return f"{self.what} {self.identifier} does not exist"


class InvalidCommand(CommandError, ValueError):
    """The command's input breaks a rule the request's schema cannot say: 422."""

    http_status = 422
    title = "Invalid request"


class DependencyFailed(CommandError):
    """An outside provider refused the call: 502."""

    http_status = 502
    title = "Provider refused"


class DependencyUnavailable(DependencyFailed):
    """An outside provider did not answer (in time); retrying later may succeed: 503."""

    http_status = 503
    title = "Provider unavailable"


def execute(
    change: Callable[[], T],
    *,
    attempts: int = COMMAND_ATTEMPTS,
    what: str = "the aggregates",
) -> T:
    """Run `change` (load, change, save) and return its result; run it again after an
    optimistic-concurrency conflict (IntegrityError), at most `attempts` times, then raise
    ConcurrentUpdate("<what> kept changing concurrently; try again")."""
    for attempt in range(1, attempts + 1):
        try:
            return change()
        except IntegrityError:
            log.info("command conflicted, retrying", attempt=attempt)
    raise gave_up(what)


def gave_up(what: str) -> ConcurrentUpdate:
    """The ConcurrentUpdate of a command on `what` that kept conflicting."""
    return ConcurrentUpdate(f"{what} kept changing concurrently; try again")
