"""Causal context carried by every domain event: which conversation, and what caused this step."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trace:
    correlation_id: str
    causation_id: str

    @classmethod
    def caused_by(cls, ce_id: str, correlation_id: str | None) -> Trace:
        """The trace of a step taken in reaction to the message `ce_id`."""
        return cls(correlation_id=correlation_id or ce_id, causation_id=ce_id)
