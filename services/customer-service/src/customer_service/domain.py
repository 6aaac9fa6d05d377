"""Returns and support cases. Pure domain: no I/O, no frameworks, no clocks (time is passed in).

Aggregates:
- `OrderRecord`: the local replica of one order (from the orders topic) plus the quantities
  of its own returns, so a return request is verified here without asking anyone.
- `ReturnRequest`: one return (RMA), requested -> authorised -> received, or rejected.
- `Case`: a support case, open -> in_progress -> resolved -> closed, with deadlines for the
  first response and the resolution by priority, each breached at most once.

Public methods check the invariants first and raise before any event is recorded; a repeat
of what already happened returns False and records nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from fulfilment_kit.tracing import Trace

CUSTOMER_SERVICE_NAMESPACE = uuid.UUID("6c1f4e2a-8b3d-4a7e-9f05-2d7c3b1a9e48")

MAX_RETURN_LINES = 100
MAX_TEXT = 500

ReturnReasonCode = Literal["damaged", "wrong_item", "not_as_described", "changed_mind", "other"]
"""Mirrors `fulfilment_kit.contracts.customer_service.ReturnReasonCode` (tests check it)."""
OUR_FAULT: frozenset[str] = frozenset({"damaged", "wrong_item", "not_as_described"})
"""Reasons that are the shop's fault: authorised automatically and refunded in full."""
InspectionResult = Literal["restockable", "damaged"]
CaseKind = Literal[
    "inquiry", "complaint", "after_sales", "delivery_exception", "payment_problem", "stuck_order"
]
CasePriority = Literal["low", "normal", "high", "urgent"]
CaseOutcome = Literal["answered", "refunded", "replaced", "no_action", "duplicate"]
SlaKind = Literal["first_response", "resolution"]

_REASON_TEXT: dict[str, str] = {
    "damaged": "the item arrived damaged",
    "wrong_item": "a wrong item was delivered",
    "not_as_described": "the item is not as described",
    "changed_mind": "the customer changed their mind",
    "other": "other reason",
}


def order_record_id(order_id: UUID) -> UUID:
    return uuid.uuid5(CUSTOMER_SERVICE_NAMESPACE, f"order:{order_id}")


def return_id_for_key(idempotency_key: str) -> UUID:
    return uuid.uuid5(CUSTOMER_SERVICE_NAMESPACE, f"return:{idempotency_key}")


def case_id_for(cause: str, order_id: UUID, generation: int = 0) -> UUID:
    """The case a cause (e.g. a delivery exception) opens for an order: the first one, or the
    `generation`-th opened after the ones before it ended."""
    suffix = f":{generation}" if generation else ""
    return uuid.uuid5(CUSTOMER_SERVICE_NAMESPACE, f"case:{cause}:{order_id}{suffix}")


def case_id_for_key(idempotency_key: str) -> UUID:
    return uuid.uuid5(CUSTOMER_SERVICE_NAMESPACE, f"case-key:{idempotency_key}")


def rma_number_for(return_id: UUID) -> str:
    """`RMA-` and 8 upper-case hex digits, always the same for one return."""
    return "RMA-" + hashlib.sha256(return_id.bytes).hexdigest()[:8].upper()


def reason_text(reason_code: str, comment: str | None) -> str:
    """The human-readable reason of a return: the customer's comment, else the code's text."""
    text = comment.strip() if comment else ""
    return (text or _REASON_TEXT.get(reason_code, reason_code))[:MAX_TEXT]


# --- value objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderedLine:
    sku: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class ReturnItem:
    """Units of one SKU to return, at the unit price the customer paid."""

    sku: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class InspectedItem:
    sku: str
    quantity: int
    result: str
    """"restockable" or "damaged"."""


@dataclass(frozen=True)
class Label:
    """A prepaid return label from the carrier."""

    label_id: str
    url: str


@dataclass(frozen=True)
class Note:
    author: str
    text: str
    at: datetime


# --- errors -----------------------------------------------------------------------------------


class CustomerServiceError(Exception):
    """A command that breaks an invariant."""


class ReturnNotAllowed(CustomerServiceError):
    """The order's state forbids the return (not delivered, window closed): HTTP 409."""


class InvalidReturn(CustomerServiceError, ValueError):
    """A return line that does not fit the order: HTTP 422; `line` names it when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class InvalidTransition(CustomerServiceError):
    """The return's or case's status does not allow this command: HTTP 409."""


class InvalidCase(CustomerServiceError, ValueError):
    """A case field outside its allowed values: HTTP 422."""


# --- policies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReturnPolicy:
    """The after-sales handbook in numbers (see the service README)."""

    window_days: float = 30.0
    auto_approve_max_minor: int = 20_000
    damaged_refund_percent: int = 0

    def __post_init__(self) -> None:
        if self.window_days < 0:
            raise ValueError("the return window cannot be negative")
        if self.auto_approve_max_minor < 0:
            raise ValueError("the auto-approval limit cannot be negative")
        if not 0 <= self.damaged_refund_percent <= 100:
            raise ValueError("the damaged refund percentage is 0 to 100")

    def authorises_automatically(self, reason_code: str, order_total_minor: int) -> bool:
        """Our fault always; a change of mind on a small order; anything else needs an agent."""
        if reason_code in OUR_FAULT:
            return True
        return reason_code == "changed_mind" and order_total_minor <= self.auto_approve_max_minor

    def refund_minor(
        self, reason_code: str, items: list[ReturnItem], inspected: list[InspectedItem]
    ) -> int:
        """Restockable units: their unit price. Damaged units: in full when it is our fault,
        else `damaged_refund_percent` of the unit price (rounded down per line)."""
        prices = {item.sku: item.unit_price_minor for item in items}
        total = 0
        for line in inspected:
            amount = prices[line.sku] * line.quantity
            if line.result == "damaged" and reason_code not in OUR_FAULT:
                amount = amount * self.damaged_refund_percent // 100
            total += amount
        return total


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


# --- the order replica ------------------------------------------------------------------------


class OrderRecord(Aggregate):
    """What customer service knows of one order, and the units of it being or already returned."""

    class Placed(Aggregate.Created):
        order_id: UUID
        customer_id: UUID
        lines: list[OrderedLine]
        currency: str
        trace: Trace

    class Delivered(Aggregate.Event):
        delivered_at: datetime
        trace: Trace

    class Ended(Aggregate.Event):
        status: str
        trace: Trace

    class ReturnOpened(Aggregate.Event):
        return_id: UUID
        lines: list[ReturnItem]
        trace: Trace

    class ReturnWithdrawn(Aggregate.Event):
        return_id: UUID
        trace: Trace

    class ReturnCompleted(Aggregate.Event):
        return_id: UUID
        trace: Trace

    @classmethod
    def place(
        cls,
        *,
        order_id: UUID,
        customer_id: UUID,
        lines: list[OrderedLine],
        currency: str,
        trace: Trace,
    ) -> OrderRecord:
        return cls(
            id=order_record_id(order_id),
            order_id=order_id,
            customer_id=customer_id,
            lines=lines,
            currency=currency,
            trace=trace,
        )

    @event(Placed)
    def __init__(
        self,
        id: UUID,
        order_id: UUID,
        customer_id: UUID,
        lines: list[OrderedLine],
        currency: str,
        trace: Trace,
    ) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.lines = list(lines)
        self.currency = currency
        self.status = "placed"
        self.delivered_at: datetime | None = None
        self.return_ids: list[UUID] = []
        self.open_returns: dict[str, list[ReturnItem]] = {}
        """Lines of returns requested or authorised and not yet received, by return id."""
        self.returned: dict[str, int] = {}
        """Units received back per SKU."""

    # -- queries --

    @property
    def total_minor(self) -> int:
        return sum(line.quantity * line.unit_price_minor for line in self.lines)

    def pending(self, sku: str) -> int:
        return sum(
            i.quantity for items in self.open_returns.values() for i in items if i.sku == sku
        )

    def returnable(self, sku: str) -> int:
        """Delivered units of `sku` not yet returned nor waiting to be."""
        ordered = sum(line.quantity for line in self.lines if line.sku == sku)
        return ordered - self.returned.get(sku, 0) - self.pending(sku)

    def line(self, sku: str) -> OrderedLine | None:
        return next((line for line in self.lines if line.sku == sku), None)

    # -- reactions to the orders topic (idempotent) --

    def deliver(self, delivered_at: datetime, trace: Trace) -> bool:
        if self.delivered_at is not None:
            return False
        self._delivered(delivered_at=delivered_at, trace=trace)
        return True

    def end(self, status: str, trace: Trace) -> bool:
        """The order was cancelled or rejected: it will never be delivered."""
        if self.status in ("cancelled", "rejected") or self.delivered_at is not None:
            return False
        self._ended(status=status, trace=trace)
        return True

    # -- returns --

    def check_return(
        self, lines: list[tuple[str, int]], now: datetime, window: timedelta
    ) -> list[ReturnItem]:
        """Verify a requested return against the order; the items at the prices paid."""
        if self.delivered_at is None:
            raise ReturnNotAllowed(f"order {self.order_id} is not delivered (it is {self.status})")
        closes_at = self.delivered_at + window
        if now > closes_at:
            raise ReturnNotAllowed(
                f"the return window of order {self.order_id} closed at {closes_at.isoformat()}"
            )
        if not 1 <= len(lines) <= MAX_RETURN_LINES:
            raise InvalidReturn(f"a return has 1 to {MAX_RETURN_LINES} lines")
        items: list[ReturnItem] = []
        seen: set[str] = set()
        for index, (sku, quantity) in enumerate(lines):
            ordered = self.line(sku)
            if ordered is None:
                raise InvalidReturn(f"lines[{index}]: {sku} is not in order {self.order_id}", index)
            if sku in seen:
                raise InvalidReturn(f"lines[{index}]: {sku} appears in more than one line", index)
            seen.add(sku)
            returnable = self.returnable(sku)
            if quantity < 1 or quantity > returnable:
                raise InvalidReturn(
                    f"lines[{index}]: {quantity} units of {sku} requested, {returnable} can be "
                    f"returned ({ordered.quantity} delivered, {self.returned.get(sku, 0)} "
                    f"returned, {self.pending(sku)} in open returns)",
                    index,
                )
            items.append(ReturnItem(sku, quantity, ordered.unit_price_minor))
        return items

    def open_return(self, return_id: UUID, items: list[ReturnItem], trace: Trace) -> None:
        if return_id in self.return_ids:
            raise InvalidTransition(f"return {return_id} is already open for this order")
        self._return_opened(return_id=return_id, lines=items, trace=trace)

    def withdraw_return(self, return_id: UUID, trace: Trace) -> bool:
        if str(return_id) not in self.open_returns:
            return False
        self._return_withdrawn(return_id=return_id, trace=trace)
        return True

    def complete_return(self, return_id: UUID, trace: Trace) -> bool:
        if str(return_id) not in self.open_returns:
            return False
        self._return_completed(return_id=return_id, trace=trace)
        return True

    # -- mutators --

    @event(Delivered)
    def _delivered(self, delivered_at: datetime, trace: Trace) -> None:
        self.delivered_at = delivered_at
        self.status = "delivered"

    @event(Ended)
    def _ended(self, status: str, trace: Trace) -> None:
        self.status = status

    @event(ReturnOpened)
    def _return_opened(self, return_id: UUID, lines: list[ReturnItem], trace: Trace) -> None:
        self.return_ids = [*self.return_ids, return_id]
        self.open_returns[str(return_id)] = list(lines)

    @event(ReturnWithdrawn)
    def _return_withdrawn(self, return_id: UUID, trace: Trace) -> None:
        self.open_returns.pop(str(return_id), None)

    @event(ReturnCompleted)
    def _return_completed(self, return_id: UUID, trace: Trace) -> None:
        for item in self.open_returns.pop(str(return_id), []):
            self.returned[item.sku] = self.returned.get(item.sku, 0) + item.quantity


# --- returns ----------------------------------------------------------------------------------


class ReturnStatus(StrEnum):
    REQUESTED = "requested"
    AUTHORISED = "authorised"
    REJECTED = "rejected"
    RECEIVED = "received"


class ReturnRequest(Aggregate):
    """One return of units of a delivered order, under an RMA number once authorised."""

    class Requested(Aggregate.Created):
        order_id: UUID
        customer_id: UUID
        lines: list[ReturnItem]
        reason_code: str
        comment: str | None
        currency: str
        order_total_minor: int
        request_fingerprint: str | None
        trace: Trace

    class Authorised(Aggregate.Event):
        order_id: UUID
        customer_id: UUID
        rma_number: str
        label: Label
        authorised_by: str
        trace: Trace

    class Rejected(Aggregate.Event):
        order_id: UUID
        customer_id: UUID
        reason: str
        rejected_by: str
        trace: Trace

    class Received(Aggregate.Event):
        order_id: UUID
        customer_id: UUID
        rma_number: str
        lines: list[InspectedItem]
        refund_minor: int
        currency: str
        trace: Trace

    @classmethod
    def request(
        cls,
        *,
        return_id: UUID,
        record: OrderRecord,
        items: list[ReturnItem],
        reason_code: str,
        comment: str | None,
        request_fingerprint: str | None,
        trace: Trace,
    ) -> ReturnRequest:
        """A return of `items` (verified by `record.check_return`)."""
        if reason_code not in _REASON_TEXT:
            raise InvalidReturn(f"unknown reason_code {reason_code!r}")
        if comment is not None and len(comment) > MAX_TEXT:
            raise InvalidReturn(f"comment has at most {MAX_TEXT} characters")
        if not items:
            raise InvalidReturn("a return needs at least one line")
        return cls(
            id=return_id,
            order_id=record.order_id,
            customer_id=record.customer_id,
            lines=items,
            reason_code=reason_code,
            comment=comment,
            currency=record.currency,
            order_total_minor=record.total_minor,
            request_fingerprint=request_fingerprint,
            trace=trace,
        )

    @event(Requested)
    def __init__(
        self,
        id: UUID,
        order_id: UUID,
        customer_id: UUID,
        lines: list[ReturnItem],
        reason_code: str,
        comment: str | None,
        currency: str,
        order_total_minor: int,
        request_fingerprint: str | None,
        trace: Trace,
    ) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.lines = list(lines)
        self.reason_code = reason_code
        self.comment = comment
        self.currency = currency
        self.order_total_minor = order_total_minor
        self.request_fingerprint = request_fingerprint
        self.status = ReturnStatus.REQUESTED
        self.rma_number: str | None = None
        self.label: Label | None = None
        self.authorised_by: str | None = None
        self.rejection_reason: str | None = None
        self.inspected: list[InspectedItem] = []
        self.refund_minor: int | None = None

    @property
    def reason(self) -> str:
        return reason_text(self.reason_code, self.comment)

    @property
    def rma(self) -> str:
        """The RMA number this return has (or will have once authorised)."""
        return rma_number_for(self.id)

    def _require(self, status: ReturnStatus, action: str) -> None:
        if self.status is not status:
            raise InvalidTransition(f"cannot {action} return {self.id}: it is {self.status}")

    def require_requested(self, action: str) -> None:
        """Raise unless the return still waits for a decision (authorise or reject)."""
        self._require(ReturnStatus.REQUESTED, action)

    def authorise(self, label: Label, authorised_by: str, trace: Trace) -> None:
        self._require(ReturnStatus.REQUESTED, "authorise")
        if not authorised_by:
            raise InvalidReturn("authorised_by must not be empty")
        self._authorised(
            order_id=self.order_id,
            customer_id=self.customer_id,
            rma_number=self.rma,
            label=label,
            authorised_by=authorised_by,
            trace=trace,
        )

    def reject(self, reason: str, rejected_by: str, trace: Trace) -> None:
        self._require(ReturnStatus.REQUESTED, "reject")
        if not reason or len(reason) > MAX_TEXT:
            raise InvalidReturn(f"reason must be 1 to {MAX_TEXT} characters")
        self._rejected(
            order_id=self.order_id,
            customer_id=self.customer_id,
            reason=reason,
            rejected_by=rejected_by,
            trace=trace,
        )

    def check_receipt(self, inspected: list[InspectedItem]) -> None:
        """Raise unless the inspected lines are exactly the authorised units."""
        if self.status is ReturnStatus.RECEIVED:
            raise InvalidTransition(f"return {self.id} was already received")
        self._require(ReturnStatus.AUTHORISED, "receive")
        expected = {item.sku: item.quantity for item in self.lines}
        got: dict[str, int] = {}
        for index, line in enumerate(inspected):
            if line.sku not in expected:
                raise InvalidReturn(f"lines[{index}]: {line.sku} is not in return {self.id}", index)
            if line.result not in ("restockable", "damaged"):
                raise InvalidReturn(f"lines[{index}]: unknown result {line.result!r}", index)
            if line.quantity < 1:
                raise InvalidReturn(f"lines[{index}]: quantity must be positive", index)
            got[line.sku] = got.get(line.sku, 0) + line.quantity
        for sku, quantity in expected.items():
            if got.get(sku, 0) != quantity:
                raise InvalidReturn(
                    f"{got.get(sku, 0)} units of {sku} inspected, {quantity} were authorised"
                )

    def receive(self, inspected: list[InspectedItem], policy: ReturnPolicy, trace: Trace) -> None:
        """The parcel arrived and was inspected: record it with the refund the policy gives."""
        self.check_receipt(inspected)
        assert self.rma_number is not None
        self._received(
            order_id=self.order_id,
            customer_id=self.customer_id,
            rma_number=self.rma_number,
            lines=list(inspected),
            refund_minor=policy.refund_minor(self.reason_code, self.lines, inspected),
            currency=self.currency,
            trace=trace,
        )

    @event(Authorised)
    def _authorised(
        self,
        order_id: UUID,
        customer_id: UUID,
        rma_number: str,
        label: Label,
        authorised_by: str,
        trace: Trace,
    ) -> None:
        self.status = ReturnStatus.AUTHORISED
        self.rma_number = rma_number
        self.label = label
        self.authorised_by = authorised_by

    @event(Rejected)
    def _rejected(
        self, order_id: UUID, customer_id: UUID, reason: str, rejected_by: str, trace: Trace
    ) -> None:
        self.status = ReturnStatus.REJECTED
        self.rejection_reason = reason

    @event(Received)
    def _received(
        self,
        order_id: UUID,
        customer_id: UUID,
        rma_number: str,
        lines: list[InspectedItem],
        refund_minor: int,
        currency: str,
        trace: Trace,
    ) -> None:
        self.status = ReturnStatus.RECEIVED
        self.inspected = list(lines)
        self.refund_minor = refund_minor


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

    class Opened(Aggregate.Created):
        kind: str
        priority: str
        summary: str
        order_id: UUID | None
        customer_id: UUID | None
        opened_at: datetime
        first_response_due_at: datetime
        resolution_due_at: datetime
        request_fingerprint: str | None
        trace: Trace

    class Assigned(Aggregate.Event):
        assignee: str
        trace: Trace

    class Commented(Aggregate.Event):
        note: Note
        trace: Trace

    class Resolved(Aggregate.Event):
        order_id: UUID | None
        customer_id: UUID | None
        outcome: str
        note: str | None
        resolved_at: datetime
        trace: Trace

    class Closed(Aggregate.Event):
        closed_at: datetime
        trace: Trace

    class SlaBreached(Aggregate.Event):
        order_id: UUID | None
        customer_id: UUID | None
        kind: str
        priority: str
        sla: str
        due_at: datetime
        breached_at: datetime
        trace: Trace

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
        trace: Trace,
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
            trace=trace,
        )

    @event(Opened)
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
        trace: Trace,
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
        self.opened_by = trace.causation_id
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
        kinds: tuple[SlaKind, ...] = ("first_response", "resolution")
        return [
            k
            for k in kinds
            if k not in self.breached and not self.sla_met(k) and now >= self.due(k)
        ]

    # -- commands --

    def _require_active(self, action: str) -> None:
        if self.status not in ACTIVE:
            raise InvalidTransition(f"cannot {action} case {self.id}: it is {self.status}")

    def assign(self, assignee: str, trace: Trace) -> bool:
        _check_text("assignee", assignee, 200)
        self._require_active("assign")
        if assignee == self.assignee:
            return False
        self._assigned(assignee=assignee, trace=trace)
        return True

    def comment(self, author: str, text: str, at: datetime, trace: Trace) -> None:
        """An agent's note; the first one is the case's first response."""
        _check_text("author", author, 200)
        _check_text("text", text, 5000)
        if self.status is CaseStatus.CLOSED:
            raise InvalidTransition(f"cannot comment on case {self.id}: it is closed")
        self._commented(note=Note(author, text, at), trace=trace)

    def resolve(self, outcome: str, note: str | None, at: datetime, trace: Trace) -> None:
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
            trace=trace,
        )

    def close(self, at: datetime, trace: Trace) -> None:
        if self.status is not CaseStatus.RESOLVED:
            raise InvalidTransition(f"cannot close case {self.id}: it is {self.status}")
        self._closed(closed_at=at, trace=trace)

    def breach(self, sla: SlaKind, now: datetime, trace: Trace) -> bool:
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
            trace=trace,
        )
        return True

    # -- mutators --

    @event(Assigned)
    def _assigned(self, assignee: str, trace: Trace) -> None:
        self.assignee = assignee
        if self.status is CaseStatus.OPEN:
            self.status = CaseStatus.IN_PROGRESS

    @event(Commented)
    def _commented(self, note: Note, trace: Trace) -> None:
        self.notes = [*self.notes, note]
        if self.first_response_at is None:
            self.first_response_at = note.at
        if self.status is CaseStatus.OPEN:
            self.status = CaseStatus.IN_PROGRESS

    @event(Resolved)
    def _resolved(
        self,
        order_id: UUID | None,
        customer_id: UUID | None,
        outcome: str,
        note: str | None,
        resolved_at: datetime,
        trace: Trace,
    ) -> None:
        self.status = CaseStatus.RESOLVED
        self.outcome = outcome
        self.resolution_note = note
        self.resolved_at = resolved_at

    @event(Closed)
    def _closed(self, closed_at: datetime, trace: Trace) -> None:
        self.status = CaseStatus.CLOSED
        self.closed_at = closed_at

    @event(SlaBreached)
    def _sla_breached(
        self,
        order_id: UUID | None,
        customer_id: UUID | None,
        kind: str,
        priority: str,
        sla: str,
        due_at: datetime,
        breached_at: datetime,
        trace: Trace,
    ) -> None:
        self.breached = [*self.breached, sla]
