"""Support cases (pure domain, rules as in `customer_service.invariants`).

`Case`: a support case, open -> in_progress -> resolved -> closed, with deadlines for the
first response and the resolution by priority, each breached at most once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from customer_service.invariants import (
    CUSTOMER_SERVICE_NAMESPACE,
    MAX_TEXT,
    CustomerServiceError,
    InvalidTransition,
)
from fulfilment_kit.commands import InvalidCommand

CaseKind = Literal[
    "inquiry", "complaint", "after_sales", "delivery_exception", "payment_problem", "stuck_order"
]
CasePriority = Literal["low", "normal", "high", "urgent"]
CaseOutcome = Literal["answered", "refunded", "replaced", "no_action", "duplicate"]
SlaKind = Literal["first_response", "resolution"]
SLA_KINDS: tuple[SlaKind, ...] = ("first_response", "resolution")


def case_id_for(cause: str, order_id: UUID, generation: int = 0) -> UUID:
    """The case a cause (e.g. a delivery exception) opens for an order: the first one, or the
    `generation`-th opened after the ones before it ended."""
    suffix = f":{generation}" if generation else ""
    return uuid.uuid5(CUSTOMER_SERVICE_NAMESPACE, f"case:{cause}:{order_id}{suffix}")


def case_id_for_key(idempotency_key: str) -> UUID:
    return uuid.uuid5(CUSTOMER_SERVICE_NAMESPACE, f"case-key:{idempotency_key}")


@dataclass(frozen=True)
class Note:
    author: str
    text: str
    at: datetime


class InvalidCase(InvalidCommand, CustomerServiceError):
    """A case field outside its allowed values: HTTP 422."""

    title = "Invalid case"


# --- the service-level policy -----------------------------------------------------------------


PRIORITIES: tuple[CasePriority, ...] = ("low", "normal", "high", "urgent")
CASE_KINDS: tuple[CaseKind, ...] = (
    "inquiry",
    "complaint",
    "after_sales",
    "delivery_exception",
    "payment_problem",
    "stuck_order",
)
OUTCOMES: tuple[CaseOutcome, ...] = ("answered", "refunded", "replaced", "no_action", "duplicate")


def _hours(first: float, resolution: float) -> tuple[timedelta, timedelta]:
    return timedelta(hours=first), timedelta(hours=resolution)


@dataclass(frozen=True)
class SlaPolicy:
    """First-response and resolution deadlines by priority."""

    deadlines: dict[str, tuple[timedelta, timedelta]] = field(
        default_factory=lambda: {
            "urgent": _hours(1, 8),
            "high": _hours(4, 24),
            "normal": _hours(8, 72),
            "low": _hours(24, 168),
        }
    )

    def due(self, priority: str, opened_at: datetime) -> tuple[datetime, datetime]:
        first, resolution = self.deadlines[priority]
        return opened_at + first, opened_at + resolution


# --- cases ------------------------------------------------------------------------------------


class CaseStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


ACTIVE = (CaseStatus.OPEN, CaseStatus.IN_PROGRESS)


def _check_text(name: str, value: str, limit: int = MAX_TEXT) -> None:
    if not value or not value.strip() or len(value) > limit:
        raise InvalidCase(f"{name} must be 1 to {limit} characters")


class Case(Aggregate):
    """A support case and its service-level deadlines (times come from the service's clock)."""

    # The events, declared by the `@event` methods below (their arguments are the fields).
    Opened: ClassVar[type[Aggregate.Created]]
    Assigned: ClassVar[type[Aggregate.Event]]
    Commented: ClassVar[type[Aggregate.Event]]
    Resolved: ClassVar[type[Aggregate.Event]]
    Closed: ClassVar[type[Aggregate.Event]]
    SlaBreached: ClassVar[type[Aggregate.Event]]

    @classmethod
    def open(
        cls,
        *,
        case_id: UUID,
        kind: str,
        priority: str,
        summary: str,
        order_id: UUID | None,
        customer_id: UUID | None,
        opened_at: datetime,
        sla: SlaPolicy,
        opened_by: str,
        request_fingerprint: str | None = None,
    ) -> Case:
        if kind not in CASE_KINDS:
            raise InvalidCase(f"unknown case kind {kind!r}")
        if priority not in PRIORITIES:
            raise InvalidCase(f"unknown priority {priority!r}")
        _check_text("summary", summary)
        first_due, resolution_due = sla.due(priority, opened_at)
        return cls(
            id=case_id,
            kind=kind,
            priority=priority,
            summary=summary,
            order_id=order_id,
            customer_id=customer_id,
            opened_at=opened_at,
            first_response_due_at=first_due,
            resolution_due_at=resolution_due,
            request_fingerprint=request_fingerprint,
            opened_by=opened_by,
        )

    @event("Opened")
    def __init__(
        self,
        id: UUID,
        kind: str,
        priority: str,
        summary: str,
        order_id: UUID | None,
        customer_id: UUID | None,
        opened_at: datetime,
        first_response_due_at: datetime,
        resolution_due_at: datetime,
        request_fingerprint: str | None,
        opened_by: str,
    ) -> None:
        self.kind = kind
        self.priority = priority
        self.summary = summary
        self.order_id = order_id
        self.customer_id = customer_id
        self.opened_at = opened_at
        self.first_response_due_at = first_response_due_at
        self.resolution_due_at = resolution_due_at
        self.request_fingerprint = request_fingerprint
        self.opened_by = opened_by
        """The message or request that opened the case (a redelivery opens no second one)."""
        self.status = CaseStatus.OPEN
        self.assignee: str | None = None
        self.notes: list[Note] = []
        self.first_response_at: datetime | None = None
        self.outcome: str | None = None
        self.resolution_note: str | None = None
        self.resolved_at: datetime | None = None
        self.closed_at: datetime | None = None
        self.breached: list[str] = []

    # -- queries --

    @property
    def active(self) -> bool:
        """Open or in progress: not resolved or closed yet."""
        return self.status in ACTIVE

    def due(self, sla: SlaKind) -> datetime:
        return self.first_response_due_at if sla == "first_response" else self.resolution_due_at

    def sla_met(self, sla: SlaKind) -> bool:
        """Whether the deadline no longer matters: responded to, or resolved."""
        if self.resolved_at is not None:
            return True
        return sla == "first_response" and self.first_response_at is not None

    def overdue(self, now: datetime) -> list[SlaKind]:
        """Deadlines passed, not met, not yet reported as breached."""
        return [
            k
            for k in SLA_KINDS
            if k not in self.breached and not self.sla_met(k) and now >= self.due(k)
        ]

    # -- commands --

    def _require_active(self, action: str) -> None:
        if self.status not in ACTIVE:
            raise InvalidTransition(f"cannot {action} case {self.id}: it is {self.status}")

    def assign(self, assignee: str) -> bool:
        _check_text("assignee", assignee, 200)
        self._require_active("assign")
        if assignee == self.assignee:
            return False
        self._assigned(assignee=assignee)
        return True

    def comment(self, author: str, text: str, at: datetime) -> None:
        """An agent's note; the first one is the case's first response."""
        _check_text("author", author, 200)
        _check_text("text", text, 5000)
        if self.status is CaseStatus.CLOSED:
            raise InvalidTransition(f"cannot comment on case {self.id}: it is closed")
        self._commented(note=Note(author, text, at))

    def resolve(self, outcome: str, note: str | None, at: datetime) -> None:
        if outcome not in OUTCOMES:
            raise InvalidCase(f"unknown outcome {outcome!r}")
        if note is not None:
            _check_text("note", note)
        self._require_active("resolve")
        self._resolved(
            order_id=self.order_id,
            customer_id=self.customer_id,
            outcome=outcome,
            note=note,
            resolved_at=at,
        )

    def close(self, at: datetime) -> None:
        if self.status is not CaseStatus.RESOLVED:
            raise InvalidTransition(f"cannot close case {self.id}: it is {self.status}")
        self._closed(closed_at=at)

    def breach(self, sla: SlaKind, now: datetime) -> bool:
        """Report a missed deadline once; False when it is not (or no longer) missed."""
        if sla not in self.overdue(now):
            return False
        self._sla_breached(
            order_id=self.order_id,
            customer_id=self.customer_id,
            kind=self.kind,
            priority=self.priority,
            sla=sla,
            due_at=self.due(sla),
            breached_at=now,
        )
        return True

    # -- mutators --

    @event("Assigned")
    def _assigned(self, assignee: str) -> None:
        self.assignee = assignee
        if self.status is CaseStatus.OPEN:
            self.status = CaseStatus.IN_PROGRESS

    @event("Commented")
    def _commented(self, note: Note) -> None:
        self.notes = [*self.notes, note]
        if self.first_response_at is None:
            self.first_response_at = note.at
        if self.status is CaseStatus.OPEN:
            self.status = CaseStatus.IN_PROGRESS

    @event("Resolved")
    def _resolved(
        self,
        order_id: UUID | None,
        customer_id: UUID | None,
        outcome: str,
        note: str | None,
        resolved_at: datetime,
    ) -> None:
        self.status = CaseStatus.RESOLVED
        self.outcome = outcome
        self.resolution_note = note
        self.resolved_at = resolved_at

    @event("Closed")
    def _closed(self, closed_at: datetime) -> None:
        self.status = CaseStatus.CLOSED
        self.closed_at = closed_at

    @event("SlaBreached")
    def _sla_breached(
        self,
        order_id: UUID | None,
        customer_id: UUID | None,
        kind: str,
        priority: str,
        sla: str,
        due_at: datetime,
        breached_at: datetime,
    ) -> None:
        self.breached = [*self.breached, sla]


def _opened_by_from_trace(state: dict[str, Any]) -> None:
    """Version 1 of `Case.Opened` named what opened the case only in its trace."""
    state["opened_by"] = state["trace"].causation_id


# Version 2 of `Case.Opened` carries `opened_by` itself.
Case.Opened.class_version = 2  # type: ignore[attr-defined]
Case.Opened.upcast_v1_v2 = staticmethod(_opened_by_from_trace)  # type: ignore[attr-defined]
