"""Causal context carried by every domain event: which conversation, and what caused this step.

It is messaging metadata, not domain data: aggregates never see it. The application layer
stamps it on the events a command or a reaction records (`stamp`, `ProcessApplication.save`,
the inbox for every message it handles); it is stored in the event's state as `trace`, and
the relay publishes it as the CloudEvents correlation and causation ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trace:
    correlation_id: str
    causation_id: str

    @classmethod
    def caused_by(cls, ce_id: str, correlation_id: str | None) -> Trace:
        """The trace of a step taken in reaction to the message `ce_id`."""
        return cls(correlation_id=correlation_id or ce_id, causation_id=ce_id)


def stamp(trace: Trace, events: Iterable[Any]) -> None:
    """Give each event without a trace `trace` (events are frozen: set beside their fields)."""
    for event in events:
        if "trace" not in vars(event):
            object.__setattr__(event, "trace", trace)


def event_trace(event: Any) -> Trace:
    """The trace stamped on a recorded domain event."""
    trace = vars(event)["trace"]
    assert isinstance(trace, Trace), f"{type(event).__qualname__} has no trace"
    return trace
