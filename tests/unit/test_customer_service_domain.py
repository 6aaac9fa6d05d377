"""The customer-service domain: the order replica, returns, the return policy, cases and SLAs."""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from customer_service.cases.domain import (
    CASE_KINDS,
    Case,
    CaseStatus,
    InvalidCase,
    SlaPolicy,
    case_id_for,
)
from customer_service.invariants import InvalidTransition
from customer_service.returns.domain import (
    InspectedItem,
    InvalidReturn,
    Label,
    OrderedLine,
    OrderRecord,
    ReturnItem,
    ReturnNotAllowed,
    ReturnPolicy,
    ReturnReasonCode,
    ReturnRequest,
    ReturnStatus,
    order_record_id,
    rma_number_for,
)
from fulfilment_kit.contracts import customer_service as contract
from fulfilment_kit.tracing import Trace

T = Trace("corr", "cause")
DELIVERED = datetime(2025, 5, 1, 12, tzinfo=UTC)
WINDOW = timedelta(days=30)
LABEL = Label("LBL-1", "sandbox://labels/RMA-1")


def record(delivered: bool = True) -> OrderRecord:
    rec = OrderRecord.place(
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        lines=[OrderedLine("MUG", 3, 1299), OrderedLine("TEE", 2, 2499)],
        currency="EUR",
    )
    if delivered:
        rec.deliver(DELIVERED)
    return rec


def test_the_domain_mirrors_the_contract_literals() -> None:
    assert typing.get_args(ReturnReasonCode) == typing.get_args(contract.ReturnReasonCode)
    assert typing.get_args(contract.CaseKind) == CASE_KINDS


def test_ids_are_deterministic() -> None:
    order_id = uuid.uuid4()
    assert order_record_id(order_id) == order_record_id(order_id)
    assert order_record_id(order_id) != order_id
    assert case_id_for("delivery_exception", order_id) != case_id_for("stuck_order", order_id)
    return_id = uuid.uuid4()
    rma = rma_number_for(return_id)
    assert rma == rma_number_for(return_id)
    assert rma.startswith("RMA-")
    assert len(rma) == 12
    assert rma[4:] == rma[4:].upper()
    assert int(rma[4:], 16) >= 0


# --- verifying a return against the order ------------------------------------------------------


def test_an_undelivered_order_cannot_be_returned() -> None:
    with pytest.raises(ReturnNotAllowed, match="is not delivered"):
        record(delivered=False).check_return([("MUG", 1)], DELIVERED, WINDOW)


def test_the_return_window_closes_after_the_configured_days() -> None:
    rec = record()
    assert rec.check_return([("MUG", 1)], DELIVERED + WINDOW, WINDOW)
    with pytest.raises(ReturnNotAllowed, match="return window"):
        rec.check_return([("MUG", 1)], DELIVERED + WINDOW + timedelta(seconds=1), WINDOW)


def test_lines_are_checked_against_what_can_still_be_returned() -> None:
    rec = record()
    with pytest.raises(InvalidReturn, match=r"lines\[1\]: HAT is not in order") as unknown:
        rec.check_return([("MUG", 1), ("HAT", 1)], DELIVERED, WINDOW)
    assert unknown.value.line == 1
    with pytest.raises(InvalidReturn, match=r"lines\[0\]: 4 units of MUG requested, 3 can be"):
        rec.check_return([("MUG", 4)], DELIVERED, WINDOW)

    items = rec.check_return([("MUG", 2)], DELIVERED, WINDOW)
    assert items == [ReturnItem("MUG", 2, 1299)]
    first = uuid.uuid4()
    rec.open_return(first, items)
    assert rec.returnable("MUG") == 1  # 2 pending
    with pytest.raises(InvalidReturn, match="2 in open returns"):
        rec.check_return([("MUG", 2)], DELIVERED, WINDOW)

    rec.complete_return(first)
    assert (rec.returned, rec.pending("MUG"), rec.returnable("MUG")) == ({"MUG": 2}, 0, 1)
    second = uuid.uuid4()
    rec.open_return(second, [ReturnItem("MUG", 1, 1299)])
    assert rec.withdraw_return(second)
    assert not rec.withdraw_return(second)
    assert rec.returnable("MUG") == 1


def test_replica_reactions_are_idempotent() -> None:
    rec = record(delivered=False)
    assert rec.deliver(DELIVERED)
    assert not rec.deliver(DELIVERED + timedelta(days=1))
    assert rec.delivered_at == DELIVERED
    assert not rec.end_undelivered("cancelled")  # delivered orders are not cancelled after the fact
    other = record(delivered=False)
    assert other.end_undelivered("cancelled")
    assert not other.end_undelivered("rejected")


# --- the return itself ---------------------------------------------------------------------------


def requested(reason: str = "damaged") -> ReturnRequest:
    rec = record()
    items = rec.check_return([("MUG", 2), ("TEE", 1)], DELIVERED, WINDOW)
    return ReturnRequest.request(
        return_id=uuid.uuid4(),
        record=rec,
        items=items,
        reason_code=reason,
        comment=None,
        request_fingerprint="f",
    )


def test_return_status_machine() -> None:
    ret = requested()
    assert ret.status is ReturnStatus.REQUESTED
    assert ret.reason == "the item arrived damaged"
    with pytest.raises(InvalidTransition, match="cannot receive"):
        ret.check_receipt([InspectedItem("MUG", 2, "restockable")])
    ret.authorise(LABEL, "policy")
    assert ret.rma_number == rma_number_for(ret.id)
    with pytest.raises(InvalidTransition, match="it is authorised"):
        ret.reject("no", "agent")
    ret.receive(
        [
            InspectedItem("MUG", 2, "restockable"),
            InspectedItem("TEE", 1, "damaged"),
        ],
        ReturnPolicy(),
    )
    assert ret.status is ReturnStatus.RECEIVED
    with pytest.raises(InvalidTransition, match="already received"):
        ret.check_receipt([InspectedItem("MUG", 2, "restockable")])

    rejected = requested("other")
    rejected.reject("worn", "agent")
    assert (rejected.status, rejected.rejection_reason) == (ReturnStatus.REJECTED, "worn")
    with pytest.raises(InvalidTransition):
        rejected.authorise(LABEL, "agent")


@pytest.mark.parametrize(
    "lines",
    [
        [InspectedItem("MUG", 2, "restockable")],  # TEE missing
        [InspectedItem("MUG", 1, "restockable"), InspectedItem("TEE", 1, "damaged")],
        [
            InspectedItem("MUG", 2, "restockable"),
            InspectedItem("TEE", 1, "damaged"),
            InspectedItem("HAT", 1, "damaged"),
        ],
    ],
)
def test_a_receipt_must_match_the_authorised_units(lines: list[InspectedItem]) -> None:
    ret = requested()
    ret.authorise(LABEL, "policy")
    with pytest.raises(InvalidReturn):
        ret.receive(lines, ReturnPolicy())
    assert ret.status is ReturnStatus.AUTHORISED


def test_a_sku_may_be_split_between_restockable_and_damaged() -> None:
    ret = requested()
    ret.authorise(LABEL, "policy")
    ret.receive(
        [
            InspectedItem("MUG", 1, "restockable"),
            InspectedItem("MUG", 1, "damaged"),
            InspectedItem("TEE", 1, "restockable"),
        ],
        ReturnPolicy(),
    )
    assert ret.refund_minor == 2 * 1299 + 2499


# --- the return policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "total", "automatic"),
    [
        ("damaged", 10**9, True),
        ("wrong_item", 10**9, True),
        ("not_as_described", 10**9, True),
        ("changed_mind", 20_000, True),
        ("changed_mind", 20_001, False),
        ("other", 1, False),
    ],
)
def test_automatic_authorisation(reason: str, total: int, automatic: bool) -> None:
    assert ReturnPolicy().authorises_automatically(reason, total) is automatic


ITEMS = [ReturnItem("MUG", 2, 1299), ReturnItem("TEE", 1, 2499)]
MIXED = [InspectedItem("MUG", 2, "restockable"), InspectedItem("TEE", 1, "damaged")]


@pytest.mark.parametrize(
    ("reason", "percent", "refund"),
    [
        ("damaged", 0, 2 * 1299 + 2499),  # our fault: damaged units in full
        ("wrong_item", 0, 2 * 1299 + 2499),
        ("not_as_described", 50, 2 * 1299 + 2499),
        ("changed_mind", 0, 2 * 1299),  # damaged by the customer: nothing by default
        ("changed_mind", 50, 2 * 1299 + 1249),  # half, rounded down
        ("other", 100, 2 * 1299 + 2499),
    ],
)
def test_refund_amounts(reason: str, percent: int, refund: int) -> None:
    policy = ReturnPolicy(damaged_refund_percent=percent)
    assert policy.refund_minor(reason, ITEMS, MIXED) == refund


def test_everything_restockable_refunds_in_full_whatever_the_reason() -> None:
    restockable = [InspectedItem("MUG", 2, "restockable"), InspectedItem("TEE", 1, "restockable")]
    assert ReturnPolicy().refund_minor("changed_mind", ITEMS, restockable) == 2 * 1299 + 2499


def test_policy_bounds() -> None:
    with pytest.raises(ValueError, match="0 to 100"):
        ReturnPolicy(damaged_refund_percent=101)
    with pytest.raises(ValueError, match="negative"):
        ReturnPolicy(window_days=-1)


# --- cases --------------------------------------------------------------------------------------

OPENED = datetime(2025, 6, 1, 9, tzinfo=UTC)


def case(priority: str = "high", kind: str = "delivery_exception") -> Case:
    return Case.open(
        case_id=uuid.uuid4(),
        kind=kind,
        priority=priority,
        summary="parcel lost",
        order_id=uuid.uuid4(),
        customer_id=None,
        opened_at=OPENED,
        sla=SlaPolicy(),
        opened_by=T.causation_id,
    )


@pytest.mark.parametrize(
    ("priority", "first_h", "resolution_h"),
    [("urgent", 1, 8), ("high", 4, 24), ("normal", 8, 72), ("low", 24, 168)],
)
def test_deadlines_by_priority(priority: str, first_h: int, resolution_h: int) -> None:
    c = case(priority)
    assert c.first_response_due_at == OPENED + timedelta(hours=first_h)
    assert c.resolution_due_at == OPENED + timedelta(hours=resolution_h)


def test_case_status_machine() -> None:
    c = case()
    assert c.status is CaseStatus.OPEN
    assert c.assign("ann")
    assert not c.assign("ann")
    assert c.status is CaseStatus.IN_PROGRESS
    c.comment("ann", "we asked the carrier", OPENED + timedelta(minutes=5))
    assert c.first_response_at == OPENED + timedelta(minutes=5)
    c.comment("bob", "still waiting", OPENED + timedelta(hours=1))
    assert c.first_response_at == OPENED + timedelta(minutes=5)
    assert [n.author for n in c.notes] == ["ann", "bob"]
    with pytest.raises(InvalidTransition, match="cannot close"):
        c.close(OPENED)
    c.resolve("replaced", "sent a new one", OPENED + timedelta(hours=2))
    with pytest.raises(InvalidTransition, match="cannot resolve"):
        c.resolve("answered", None, OPENED)
    with pytest.raises(InvalidTransition, match="cannot assign"):
        c.assign("carl")
    c.close(OPENED + timedelta(hours=3))
    assert c.status is CaseStatus.CLOSED
    with pytest.raises(InvalidTransition, match="closed"):
        c.comment("ann", "late", OPENED)


def test_invalid_cases() -> None:
    with pytest.raises(InvalidCase, match="kind"):
        case(kind="gossip")
    with pytest.raises(InvalidCase, match="priority"):
        case(priority="whenever")
    with pytest.raises(InvalidCase, match="outcome"):
        case().resolve("shrug", None, OPENED)


def test_sla_breaches_once_per_kind_and_only_when_unmet() -> None:
    c = case("high")
    assert c.overdue(OPENED + timedelta(hours=3)) == []
    at_4h = OPENED + timedelta(hours=4)
    assert c.overdue(at_4h) == ["first_response"]
    assert c.breach("first_response", at_4h)
    assert not c.breach("first_response", at_4h + timedelta(hours=1))
    assert not c.breach("resolution", at_4h)  # not due yet
    at_24h = OPENED + timedelta(hours=24)
    assert c.overdue(at_24h) == ["resolution"]
    assert c.breach("resolution", at_24h)
    assert c.breached == ["first_response", "resolution"]

    answered = case("high")
    answered.comment("ann", "on it", OPENED + timedelta(hours=1))
    assert answered.overdue(OPENED + timedelta(hours=5)) == []
    resolved = case("high")
    resolved.resolve("answered", None, OPENED + timedelta(hours=1))
    assert resolved.overdue(OPENED + timedelta(days=30)) == []
