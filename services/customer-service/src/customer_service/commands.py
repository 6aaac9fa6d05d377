"""What the returns and cases commands share: the result of a command, its save with the kit's
retry on a concurrent write, and the correlation of a command's trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from fulfilment_kit.commands import execute
from fulfilment_kit.messaging.inbox import ProcessApplication
from fulfilment_kit.tracing import Trace

T = TypeVar("T")

ToSave = tuple[T, list[Aggregate], Trace]
"""What a command changed: its aggregate, the others saved with it, and the command's trace."""


@dataclass(frozen=True)
class CommandResult:
    """The aggregate a command changed, and whether this call changed it (False: a replay)."""

    aggregate: Any
    created: bool = True


class CommandsBase(ProcessApplication):
    """The customer-service application's parts that commands of both slices use."""

    clock: Callable[[], datetime]

    def _execute(self, change: Callable[[], ToSave[T]]) -> T:
        """Run `change` and save what it changed atomically; retry on a concurrent write."""

        def attempt() -> T:
            main, others, trace = change()
            assert isinstance(main, Aggregate)
            self.save(main, *others, trace=trace)
            return main

        return execute(attempt, what="the aggregate")


def correlated(trace: Trace, about: UUID) -> Trace:
    """`trace`, correlated by what the command is about when the caller gave no id."""
    return trace if trace.correlation_id else Trace(str(about), trace.causation_id)
