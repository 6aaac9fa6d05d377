"""Returns (pure domain, rules as in `customer_service.invariants`).

- `OrderRecord`: the local replica of one order (from the orders topic) plus the quantities
  of its own returns, so a return request is verified here without asking anyone.
- `ReturnRequest`: one return (RMA), requested -> authorised -> received, or rejected.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from customer_service.invariants import (
    CUSTOMER_SERVICE_NAMESPACE,
    MAX_TEXT,
    CustomerServiceError,
    InvalidTransition,
)
from fulfilment_kit.commands import InvalidCommand

MAX_RETURN_LINES = 100

ReturnReasonCode = Literal["damaged", "wrong_item", "not_as_described", "changed_mind", "other"]
"""Mirrors `fulfilment_kit.contracts.customer_service.ReturnReasonCode` (tests check it)."""
OUR_FAULT: frozenset[str] = frozenset({"damaged", "wrong_item", "not_as_described"})
"""Reasons that are the shop's fault: authorised automatically and refunded in full."""
InspectionResult = Literal["restockable", "damaged"]

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


class ReturnNotAllowed(CustomerServiceError):
    """The order's state forbids the return (not delivered, window closed): HTTP 409."""


class InvalidReturn(InvalidCommand, CustomerServiceError):
    """A return line that does not fit the order: HTTP 422; `line` names it when known."""

    title = "Invalid return"

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    @property
    def extra(self) -> dict[str, object]:
        field = f"lines[{self.line}]" if self.line is not None else "lines"
        return {"errors": [{"field": field, "message": str(self), "type": "return_line"}]}


# --- the return policy ------------------------------------------------------------------------


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


# --- the order replica ------------------------------------------------------------------------


class OrderRecord(Aggregate):
    """What customer service knows of one order, and the units of it being or already returned."""

    # The events, declared by the `@event` methods below (their arguments are the fields).
    Placed: ClassVar[type[Aggregate.Created]]
    Delivered: ClassVar[type[Aggregate.Event]]
    Ended: ClassVar[type[Aggregate.Event]]
    ReturnOpened: ClassVar[type[Aggregate.Event]]
    ReturnWithdrawn: ClassVar[type[Aggregate.Event]]
    ReturnCompleted: ClassVar[type[Aggregate.Event]]

    @classmethod
    def place(
        cls,
        *,
        order_id: UUID,
        customer_id: UUID,
        lines: list[OrderedLine],
        currency: str,
    ) -> OrderRecord:
        return cls(
            id=order_record_id(order_id),
            order_id=order_id,
            customer_id=customer_id,
            lines=lines,
            currency=currency,
        )

    @event("Placed")
    def __init__(
        self,
        id: UUID,
        order_id: UUID,
        customer_id: UUID,
        lines: list[OrderedLine],
        currency: str,
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

    def deliver(self, delivered_at: datetime) -> bool:
        if self.delivered_at is not None:
            return False
        self._delivered(delivered_at=delivered_at)
        return True

    def end_undelivered(self, status: str) -> bool:
        """The order was cancelled or rejected: it will never be delivered."""
        if self.status in ("cancelled", "rejected") or self.delivered_at is not None:
            return False
        self._ended(status=status)
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

    def open_return(self, return_id: UUID, items: list[ReturnItem]) -> None:
        if return_id in self.return_ids:
            raise InvalidTransition(f"return {return_id} is already open for this order")
        self._return_opened(return_id=return_id, lines=items)

    def withdraw_return(self, return_id: UUID) -> bool:
        if str(return_id) not in self.open_returns:
            return False
        self._return_withdrawn(return_id=return_id)
        return True

    def complete_return(self, return_id: UUID) -> bool:
        if str(return_id) not in self.open_returns:
            return False
        self._return_completed(return_id=return_id)
        return True

    # -- mutators --

    @event("Delivered")
    def _delivered(self, delivered_at: datetime) -> None:
        self.delivered_at = delivered_at
        self.status = "delivered"

    @event("Ended")
    def _ended(self, status: str) -> None:
        self.status = status

    @event("ReturnOpened")
    def _return_opened(self, return_id: UUID, lines: list[ReturnItem]) -> None:
        self.return_ids = [*self.return_ids, return_id]
        self.open_returns[str(return_id)] = list(lines)

    @event("ReturnWithdrawn")
    def _return_withdrawn(self, return_id: UUID) -> None:
        self.open_returns.pop(str(return_id), None)

    @event("ReturnCompleted")
    def _return_completed(self, return_id: UUID) -> None:
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

    # The events, declared by the `@event` methods below (their arguments are the fields).
    Requested: ClassVar[type[Aggregate.Created]]
    Authorised: ClassVar[type[Aggregate.Event]]
    Rejected: ClassVar[type[Aggregate.Event]]
    Received: ClassVar[type[Aggregate.Event]]

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
        )

    @event("Requested")
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

    def authorise(self, label: Label, authorised_by: str) -> None:
        self._require(ReturnStatus.REQUESTED, "authorise")
        if not authorised_by:
            raise InvalidReturn("authorised_by must not be empty")
        self._authorised(
            order_id=self.order_id,
            customer_id=self.customer_id,
            rma_number=self.rma,
            label=label,
            authorised_by=authorised_by,
        )

    def reject(self, reason: str, rejected_by: str) -> None:
        self._require(ReturnStatus.REQUESTED, "reject")
        if not reason or len(reason) > MAX_TEXT:
            raise InvalidReturn(f"reason must be 1 to {MAX_TEXT} characters")
        self._rejected(
            order_id=self.order_id,
            customer_id=self.customer_id,
            reason=reason,
            rejected_by=rejected_by,
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

    def receive(self, inspected: list[InspectedItem], policy: ReturnPolicy) -> None:
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
        )

    @event("Authorised")
    def _authorised(
        self,
        order_id: UUID,
        customer_id: UUID,
        rma_number: str,
        label: Label,
        authorised_by: str,
    ) -> None:
        self.status = ReturnStatus.AUTHORISED
        self.rma_number = rma_number
        self.label = label
        self.authorised_by = authorised_by

    @event("Rejected")
    def _rejected(self, order_id: UUID, customer_id: UUID, reason: str, rejected_by: str) -> None:
        self.status = ReturnStatus.REJECTED
        self.rejection_reason = reason

    @event("Received")
    def _received(
        self,
        order_id: UUID,
        customer_id: UUID,
        rma_number: str,
        lines: list[InspectedItem],
        refund_minor: int,
        currency: str,
    ) -> None:
        self.status = ReturnStatus.RECEIVED
        self.inspected = list(lines)
        self.refund_minor = refund_minor
