"""The returns slice of the customer-service application: request, decide and receive
returns, verified against the local order replica (kept by the application's policy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import structlog

from customer_service.commands import CommandResult, CommandsBase, ToSave, correlated
from customer_service.returns.domain import (
    InspectedItem,
    Label,
    OrderRecord,
    ReturnPolicy,
    ReturnRequest,
    order_record_id,
    return_id_for_key,
)
from customer_service.returns.labels import LabelGateway, label_key
from fulfilment_kit.commands import NotFound
from fulfilment_kit.idempotency import key_id, recorded, run_idempotently
from fulfilment_kit.tracing import Trace

log = structlog.get_logger(__name__)


class OrderNotFound(NotFound, what="order"): ...


class ReturnNotFound(NotFound, what="return"): ...


@dataclass(frozen=True)
class RequestReturn:
    order_id: UUID
    lines: list[tuple[str, int]]
    reason_code: str
    comment: str | None
    idempotency_key: str | None
    fingerprint: str
    trace: Trace


class ReturnCommands(CommandsBase):
    """Commands and queries of returns (part of `CustomerServiceApplication`)."""

    return_policy: ReturnPolicy
    labels: LabelGateway

    # -- returns: commands ------------------------------------------------------------------

    def request_return(self, command: RequestReturn) -> CommandResult:
        """Verify a return against the order, record it, and authorise it when policy allows.

        Raises OrderNotFound, domain ReturnNotAllowed / InvalidReturn, IdempotencyConflict,
        gateway TransientLabelError / LabelError, ConcurrentUpdate. Nothing is recorded then.
        """
        return_id = key_id(command.idempotency_key, return_id_for_key)

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
            )
            record.open_return(return_id, items)
            if self.return_policy.authorises_automatically(ret.reason_code, record.total_minor):
                ret.authorise(self._label(ret), "policy")
            # IntegrityError: the order or the same key changed
            self.save(record, ret, trace=command.trace)
            log.info(
                "return requested",
                order_id=str(ret.order_id),
                return_id=str(ret.id),
                status=str(ret.status),
            )
            return ret

        outcome = run_idempotently(
            replay=lambda: recorded(self.find(return_id, ReturnRequest), command.fingerprint),
            attempt=attempt,
            what=f"order {command.order_id}",
        )
        return CommandResult(outcome.result, created=outcome.applied)

    def _label(self, ret: ReturnRequest) -> Label:
        return self.labels.create_label(
            idempotency_key=label_key(ret.id), return_id=ret.id, rma_number=ret.rma
        )

    def authorise_return(self, return_id: UUID, agent: str, given: Trace) -> ReturnRequest:
        def change() -> ToSave[ReturnRequest]:
            ret = self.get_return(return_id)
            ret.require_requested("authorise")  # before asking the carrier for a label
            ret.authorise(self._label(ret), agent)
            return ret, [], correlated(given, ret.order_id)

        return self._execute(change)

    def reject_return(
        self, return_id: UUID, reason: str, agent: str, given: Trace
    ) -> ReturnRequest:
        def change() -> ToSave[ReturnRequest]:
            ret = self.get_return(return_id)
            ret.reject(reason, agent)
            record = self.get_order_record(ret.order_id)
            record.withdraw_return(ret.id)
            return ret, [record], correlated(given, ret.order_id)

        return self._execute(change)

    def receive_return(
        self, return_id: UUID, inspected: list[InspectedItem], given: Trace
    ) -> ReturnRequest:
        def change() -> ToSave[ReturnRequest]:
            ret = self.get_return(return_id)
            ret.receive(inspected, self.return_policy)
            record = self.get_order_record(ret.order_id)
            record.complete_return(ret.id)
            return ret, [record], correlated(given, ret.order_id)

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
