"""The customer-service application: returns and cases (commands, queries) and the policy
reacting to the other services' events.

Policy (runs in the inbox's worker thread, one transaction per batch with its tracking):
- OrderPlaced / OrderDelivered / OrderCancelled / OrderRejected keep the local `OrderRecord`
  replica that return requests are verified against.
- ShipmentException, OrderFlagged, PaymentFailed and PaymentUnresolved (a capture whose
  outcome stayed unknown past the deadline) open a case whose id is derived from the cause,
  the order id and how many such cases ended before: one active case per cause and order, a
  new one once it was resolved or closed, and a redelivered message opens none.
- The cancellation protocol's events (cancellation requested, shipment cancelled, refused)
  need no reaction here: the replica ends on OrderCancelled; the timeline shows them all.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import structlog
from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, JSONTranscoder
from eventsourcing.utils import get_topic

from customer_service.domain import (
    Case,
    InspectedItem,
    Label,
    Note,
    OrderedLine,
    OrderRecord,
    ReturnItem,
    ReturnPolicy,
    ReturnRequest,
    SlaKind,
    SlaPolicy,
    case_id_for,
    case_id_for_key,
    order_record_id,
    return_id_for_key,
)
from customer_service.gateway import LabelGateway, SandboxLabels, label_key
from fulfilment_kit.contracts import (
    IntegrationEvent,
    OrderCancelled,
    OrderDelivered,
    OrderFlagged,
    OrderPlaced,
    OrderRejected,
    PaymentFailed,
    PaymentUnresolved,
    ShipmentException,
)
from fulfilment_kit.idempotency import ConcurrentUpdate as ConcurrentUpdate  # re-exported
from fulfilment_kit.idempotency import IdempotencyConflict as IdempotencyConflict  # re-exported
from fulfilment_kit.idempotency import check_fingerprint, run_idempotently
from fulfilment_kit.messaging.inbox import InboundMessage, InboxApplication
from fulfilment_kit.persistence.batch_load import load_aggregates
from fulfilment_kit.persistence.follower import LogFollower, Writes
from fulfilment_kit.persistence.transcodings import register_dataclasses
from fulfilment_kit.tracing import Trace

log = structlog.get_logger(__name__)

COMMAND_ATTEMPTS = 5
"""How often an HTTP command is retried after an optimistic-concurrency conflict."""

T = TypeVar("T")


class OrderNotFound(LookupError):
    pass


class ReturnNotFound(LookupError):
    pass


class CaseNotFound(LookupError):
    pass


@dataclass(frozen=True)
class RequestReturn:
    order_id: UUID
    lines: list[tuple[str, int]]
    reason_code: str
    comment: str | None
    idempotency_key: str | None
    fingerprint: str
    trace: Trace


@dataclass(frozen=True)
class OpenCase:
    kind: str
    priority: str
    summary: str
    order_id: UUID | None
    customer_id: UUID | None
    idempotency_key: str | None
    fingerprint: str
    trace: Trace


@dataclass(frozen=True)
class Done:
    """The aggregate a command changed, and whether this call changed it (False: a replay)."""

    aggregate: Any
    created: bool = True


class CustomerServiceApplication(InboxApplication):
    name = "customer-service"
    reacts_to = (
        OrderPlaced,
        OrderDelivered,
        OrderCancelled,
        OrderRejected,
        ShipmentException,
        OrderFlagged,
        PaymentFailed,
        PaymentUnresolved,
    )

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        return_policy: ReturnPolicy | None = None,
        sla: SlaPolicy | None = None,
        labels: LabelGateway | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(env)
        self.return_policy = return_policy or ReturnPolicy()
        self.sla = sla or SlaPolicy()
        self.labels: LabelGateway = labels if labels is not None else SandboxLabels()
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.cases = CaseDirectory(self)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, OrderedLine, ReturnItem, InspectedItem, Label, Note, Trace)

    # -- returns: commands ------------------------------------------------------------------

    def request_return(self, command: RequestReturn) -> Done:
        """Verify a return against the order, record it, and authorise it when policy allows.

        Raises OrderNotFound, domain ReturnNotAllowed / InvalidReturn, IdempotencyConflict,
        gateway TransientLabelError / LabelError, ConcurrentUpdate. Nothing is recorded then.
        """
        if command.idempotency_key is None:
            return_id = uuid.uuid4()
        else:
            return_id = return_id_for_key(command.idempotency_key)

        def attempt() -> ReturnRequest:
            record = self.get_order_record(command.order_id)
            window = timedelta(days=self.return_policy.window_days)
            items = record.check_return(command.lines, self.clock(), window)
            ret = ReturnRequest.request(
                return_id=return_id,
                record=record,
                items=items,
                reason_code=command.reason_code,
                comment=command.comment,
                request_fingerprint=command.fingerprint,
                trace=command.trace,
            )
            record.open_return(return_id, items, command.trace)
            if self.return_policy.authorises_automatically(ret.reason_code, record.total_minor):
                ret.authorise(self._label(ret), "policy", command.trace)
            self.save(record, ret)  # IntegrityError: the order or the same key changed
            log.info(
                "return requested",
                order_id=str(ret.order_id),
                return_id=str(ret.id),
                status=str(ret.status),
            )
            return ret

        try:
            outcome = run_idempotently(
                replay=lambda: self._replay_return(return_id, command),
                attempt=attempt,
                attempts=COMMAND_ATTEMPTS,
            )
        except ConcurrentUpdate as exc:
            raise ConcurrentUpdate(f"order {command.order_id} kept changing; try again") from exc
        return Done(outcome.result, created=outcome.applied)

    def _replay_return(self, return_id: UUID, command: RequestReturn) -> ReturnRequest | None:
        ret = self.find(return_id, ReturnRequest)
        if ret is None:
            return None
        check_fingerprint(command.idempotency_key, ret.request_fingerprint, command.fingerprint)
        return ret

    def _label(self, ret: ReturnRequest) -> Label:
        return self.labels.create_label(
            idempotency_key=label_key(ret.id), return_id=ret.id, rma_number=ret.rma
        )

    def authorise_return(self, return_id: UUID, agent: str, given: Trace) -> ReturnRequest:
        def change() -> tuple[ReturnRequest, list[Aggregate]]:
            ret = self.get_return(return_id)
            trace = _correlated(given, ret.order_id)
            ret.require_requested("authorise")  # before asking the carrier for a label
            ret.authorise(self._label(ret), agent, trace)
            return ret, []

        return self._execute(change)

    def reject_return(
        self, return_id: UUID, reason: str, agent: str, given: Trace
    ) -> ReturnRequest:
        def change() -> tuple[ReturnRequest, list[Aggregate]]:
            ret = self.get_return(return_id)
            trace = _correlated(given, ret.order_id)
            ret.reject(reason, agent, trace)
            record = self.get_order_record(ret.order_id)
            record.withdraw_return(ret.id, trace)
            return ret, [record]

        return self._execute(change)

    def receive_return(
        self, return_id: UUID, inspected: list[InspectedItem], given: Trace
    ) -> ReturnRequest:
        def change() -> tuple[ReturnRequest, list[Aggregate]]:
            ret = self.get_return(return_id)
            trace = _correlated(given, ret.order_id)
            ret.receive(inspected, self.return_policy, trace)
            record = self.get_order_record(ret.order_id)
            record.complete_return(ret.id, trace)
            return ret, [record]

        return self._execute(change)

    # -- returns: queries -------------------------------------------------------------------

    def get_order_record(self, order_id: UUID) -> OrderRecord:
        record = self.find(order_record_id(order_id), OrderRecord)
        if record is None:
            raise OrderNotFound(str(order_id))
        return record

    def get_return(self, return_id: UUID) -> ReturnRequest:
        ret = self.find(return_id, ReturnRequest)
        if ret is None:
            raise ReturnNotFound(str(return_id))
        return ret

    def list_returns(self, order_id: UUID) -> list[ReturnRequest]:
        record = self.find(order_record_id(order_id), OrderRecord)
        return [self.get_return(r) for r in record.return_ids] if record else []

    # -- cases: commands --------------------------------------------------------------------

    def open_case(self, command: OpenCase) -> Done:
        """Open a case by hand, once per Idempotency-Key."""
        if command.idempotency_key is None:
            case_id = uuid.uuid4()
        else:
            case_id = case_id_for_key(command.idempotency_key)

        def attempt() -> Case:
            trace = _correlated(command.trace, command.order_id or case_id)
            case = Case.open(
                case_id=case_id,
                kind=command.kind,
                priority=command.priority,
                summary=command.summary,
                order_id=command.order_id,
                customer_id=command.customer_id,
                opened_at=self.clock(),
                sla=self.sla,
                trace=trace,
                request_fingerprint=command.fingerprint,
            )
            self.save(case)
            log.info("case opened", case_id=str(case.id), kind=case.kind, priority=case.priority)
            return case

        outcome = run_idempotently(
            replay=lambda: self._replay_case(case_id, command), attempt=attempt
        )
        return Done(outcome.result, created=outcome.applied)

    def _replay_case(self, case_id: UUID, command: OpenCase) -> Case | None:
        case = self.find(case_id, Case)
        if case is None:
            return None
        check_fingerprint(command.idempotency_key, case.request_fingerprint, command.fingerprint)
        return case

    def assign_case(self, case_id: UUID, assignee: str, trace: Trace) -> Case:
        return self._change_case(case_id, lambda case, t: case.assign(assignee, t), trace)

    def comment_case(self, case_id: UUID, author: str, text: str, trace: Trace) -> Case:
        return self._change_case(
            case_id, lambda case, t: case.comment(author, text, self.clock(), t), trace
        )

    def resolve_case(self, case_id: UUID, outcome: str, note: str | None, trace: Trace) -> Case:
        return self._change_case(
            case_id, lambda case, t: case.resolve(outcome, note, self.clock(), t), trace
        )

    def close_case(self, case_id: UUID, trace: Trace) -> Case:
        return self._change_case(case_id, lambda case, t: case.close(self.clock(), t), trace)

    def breach_sla(self, case_id: UUID, sla: SlaKind, now: datetime) -> bool:
        """Record a missed deadline once; False if it was met or reported meanwhile."""
        case = self.get_case(case_id)
        trace = Trace(
            correlation_id=str(case.order_id or case.id), causation_id=f"sla:{sla}:{case.id}"
        )
        if not case.breach(sla, now, trace):
            return False
        try:
            self.save(case)
        except IntegrityError:
            return False  # the case changed meanwhile; the watch looks again
        return True

    def _change_case(
        self, case_id: UUID, change: Callable[[Case, Trace], object], given: Trace
    ) -> Case:
        def run() -> tuple[Case, list[Aggregate]]:
            case = self.get_case(case_id)
            change(case, _correlated(given, case.order_id or case.id))
            return case, []

        return self._execute(run)

    def _execute(self, change: Callable[[], tuple[T, list[Aggregate]]]) -> T:
        """Run `change` and save what it changed atomically; retry on a concurrent write."""
        for attempt in range(1, COMMAND_ATTEMPTS + 1):
            main, others = change()
            assert isinstance(main, Aggregate)
            try:
                self.save(main, *others)
            except IntegrityError:
                log.info("command conflicted, retrying", attempt=attempt)
                continue
            return main
        raise ConcurrentUpdate("the aggregate kept changing concurrently; try again")

    # -- cases: queries ---------------------------------------------------------------------

    def get_case(self, case_id: UUID) -> Case:
        case = self.find(case_id, Case)
        if case is None:
            raise CaseNotFound(str(case_id))
        return case

    def list_cases(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        assignee: str | None = None,
        order_id: UUID | None = None,
    ) -> list[Case]:
        return self.cases.query(status=status, kind=kind, assignee=assignee, order_id=order_id)

    # -- policy (Kafka): every change goes on `processing`, saved with the tracking record --

    def aggregate_ids(self, message: InboundMessage) -> list[UUID]:
        order_id = getattr(message.envelope.event, "order_id", None)
        return [order_record_id(order_id)] if isinstance(order_id, UUID) else []

    def handle(self, message: InboundMessage, processing: ProcessingEvent[UUID]) -> None:
        self._react(message.envelope.event, message, processing)

    def _order(self, processing: ProcessingEvent[UUID], order_id: UUID) -> OrderRecord | None:
        return self.get_for_update(processing, order_record_id(order_id), OrderRecord)

    @functools.singledispatchmethod
    def _react(
        self, event: IntegrationEvent, message: InboundMessage, processing: ProcessingEvent[UUID]
    ) -> None:
        """Events this service does not react to: ignored."""

    @_react.register
    def _(self, event: OrderPlaced, message: InboundMessage, processing: Any) -> None:
        if self._order(processing, event.order_id) is not None:
            return  # known already (a redelivery at a new offset)
        record = OrderRecord.place(
            order_id=event.order_id,
            customer_id=event.customer_id,
            lines=[OrderedLine(x.sku, x.quantity, x.unit_price_minor) for x in event.lines],
            currency=event.currency,
            trace=_trace(message),
        )
        processing.collect_events(record)

    @_react.register
    def _(self, event: OrderDelivered, message: InboundMessage, processing: Any) -> None:
        if (record := self._order(processing, event.order_id)) and record.deliver(
            event.delivered_at, _trace(message)
        ):
            processing.collect_events(record)

    @_react.register
    def _(self, event: OrderCancelled, message: InboundMessage, processing: Any) -> None:
        if (record := self._order(processing, event.order_id)) and record.end(
            "cancelled", _trace(message)
        ):
            processing.collect_events(record)

    @_react.register
    def _(self, event: OrderRejected, message: InboundMessage, processing: Any) -> None:
        if (record := self._order(processing, event.order_id)) and record.end(
            "rejected", _trace(message)
        ):
            processing.collect_events(record)

    @_react.register
    def _(self, event: ShipmentException, message: InboundMessage, processing: Any) -> None:
        summary = f"delivery exception ({event.reason_code}): {event.reason}"
        self._open_automatically(
            processing, "delivery_exception", "high", summary, event.order_id, None, message
        )

    @_react.register
    def _(self, event: OrderFlagged, message: InboundMessage, processing: Any) -> None:
        summary = (
            f"order stuck in {event.stage} since {event.stage_entered_at.isoformat()} "
            f"(deadline {event.deadline_at.isoformat()})"
        )
        self._open_automatically(
            processing, "stuck_order", "high", summary, event.order_id, event.customer_id, message
        )

    @_react.register
    def _(self, event: PaymentFailed, message: InboundMessage, processing: Any) -> None:
        summary = f"payment of {event.amount_minor} {event.currency} failed: {event.reason_code}"
        self._open_automatically(
            processing, "payment_problem", "normal", summary, event.order_id, None, message
        )

    @_react.register
    def _(self, event: PaymentUnresolved, message: InboundMessage, processing: Any) -> None:
        summary = (
            f"payment of {event.amount_minor} {event.currency}: the provider's answer is unknown "
            f"since {event.unknown_since.isoformat()} ({event.lookups} lookups); the card may "
            "have been charged"
        )
        self._open_automatically(
            processing, "payment_problem", "high", summary, event.order_id, None, message
        )

    def _open_automatically(
        self,
        processing: ProcessingEvent[UUID],
        kind: str,
        priority: str,
        summary: str,
        order_id: UUID,
        customer_id: UUID | None,
        message: InboundMessage,
    ) -> None:
        # One active case per cause and order; a new one once the previous one has ended.
        for generation in itertools.count():
            case_id = case_id_for(kind, order_id, generation)
            existing = self.get_for_update(processing, case_id, Case)
            if existing is None:
                break
            if existing.active or existing.opened_by == message.envelope.id:
                return  # the cause has its case (or this message opened one: a redelivery)
        if customer_id is None and (record := self._order(processing, order_id)):
            customer_id = record.customer_id
        case = Case.open(
            case_id=case_id,
            kind=kind,
            priority=priority,
            summary=summary[:500],
            order_id=order_id,
            customer_id=customer_id,
            opened_at=self.clock(),
            sla=self.sla,
            trace=_trace(message),
        )
        processing.collect_events(case)
        log.info("case opened", case_id=str(case_id), kind=kind, order_id=str(order_id))


def _correlated(trace: Trace, about: UUID) -> Trace:
    """`trace`, correlated by what the command is about when the caller gave no id."""
    return trace if trace.correlation_id else Trace(str(about), trace.causation_id)


def _trace(message: InboundMessage) -> Trace:
    return Trace.caused_by(message.envelope.id, message.envelope.correlation_id)


CASE_EVENT_TOPICS = tuple(
    get_topic(cls)
    for cls in (
        Case.Opened,
        Case.Assigned,
        Case.Commented,
        Case.Resolved,
        Case.Closed,
        Case.SlaBreached,
    )
)


class CaseDirectory:
    """Every case's filterable fields and pending SLA deadlines, in the kit follower's table.

    Followed from the case events of the notification log from its persisted position (a
    restart reads only what is new); each query first catches up, so a case saved before
    the query is always in it. The SLA watch claims the due deadlines from it.
    """

    FOLLOWER = "customer-service-cases"

    def __init__(self, app: CustomerServiceApplication) -> None:
        self.app = app
        self.follower = LogFollower(app, self.FOLLOWER, self._project, topics=CASE_EVENT_TOPICS)

    def refresh(self) -> None:
        """Catch up with the log (blocking: call from a worker thread)."""
        self.follower.catch_up()

    def _project(self, events: Sequence[Any], writes: Writes) -> None:
        touched = list(dict.fromkeys(event.originator_id for event in events))
        cases = load_aggregates(self.app, touched)  # their current state: later events agree
        for case_id in touched:
            case = cases.get(case_id)
            if not isinstance(case, Case):
                continue
            writes.put(
                "case",
                str(case.id),
                status=str(case.status),
                kind=case.kind,
                assignee=case.assignee,
                order_id=None if case.order_id is None else str(case.order_id),
                opened_at=case.opened_at.isoformat(),
            )
            for sla in SLA_KINDS:
                key = f"{case.id}:{sla}"
                if sla in case.breached or case.sla_met(sla):
                    writes.drop("sla", key)
                else:
                    writes.put(
                        "sla",
                        key,
                        due_at=case.due(sla),
                        case_id=str(case.id),
                        sla=sla,
                        priority=case.priority,
                    )

    def query(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        assignee: str | None = None,
        order_id: UUID | None = None,
    ) -> list[Case]:
        self.refresh()
        where: dict[str, Any] = {}
        if status is not None:
            where["status"] = status
        if kind is not None:
            where["kind"] = kind
        if assignee is not None:
            where["assignee"] = assignee
        if order_id is not None:
            where["order_id"] = str(order_id)
        ids = [UUID(item.key) for item in self.follower.items("case", **where)]
        found = [c for c in load_aggregates(self.app, ids).values() if isinstance(c, Case)]
        return sorted(found, key=lambda case: (case.opened_at, str(case.id)))


SLA_KINDS: tuple[SlaKind, ...] = ("first_response", "resolution")
