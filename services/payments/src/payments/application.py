"""The payments application: the capture/refund policy over the Payment aggregate, and commands.

Policy (runs in the inbox's worker thread, one transaction per batch with its tracking). It
never calls the provider: it records intents, and the provider worker (`payments.worker`)
makes the calls outside any consumer transaction, each with its own timeout.
- OrderPlaced and StockLocked, in either order: when both have arrived, the capture is
  requested (idempotency key = payment id).
- ShipmentCancelled (shipping held the parcel) or OrderCancelled: captured -> the
  cancellation refund of what is left is requested (refund id = uuid5 of the order id, one
  per order whichever message caused it); capture not requested yet -> cancelled, never
  captured; capture in flight -> cancelled, and refunded once the provider says it captured.
- StockRejected: voided, never captured.
- ReturnReceived with a refund: its refund is requested (refund id = uuid5 of the return id),
  capped at what is left of the capture (the cap is logged).
- PaymentUnresolved is published when an outcome stays unknown past the deadline.
Anything else is ignored. Every step first checks the aggregate's state, so a message
redelivered at another offset has no second effect; the provider's idempotency keys cover a
call repeated after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import JSONTranscoder, Recording

from fulfilment_kit.commands import IdempotencyConflict, NotFound, execute
from fulfilment_kit.contracts import (
    OrderCancelled,
    OrderPlaced,
    ReturnReceived,
    ShipmentCancelled,
    StockLocked,
    StockRejected,
)
from fulfilment_kit.idempotency import key_id
from fulfilment_kit.messaging.inbox import InboundMessage, ProcessApplication, Processing
from fulfilment_kit.messaging.policy import by_order, policy
from fulfilment_kit.persistence.transcodings import register_dataclasses
from fulfilment_kit.privacy import PersonalDataVault, in_process_vault
from fulfilment_kit.tracing import Trace
from payments.domain import (
    Payment,
    Refund,
    cancellation_refund_id,
    payment_id_for,
    refund_id_for,
)
from payments.gateway import (
    PaymentGateway,
    RefundRejectedError,
    RefundResult,
    RetryPolicy,
    gateway_from_settings,
)
from payments.metrics import PAYMENTS_TOTAL
from payments.settings import PaymentsSettings

log = structlog.get_logger(__name__)


class PaymentNotFound(NotFound, what="payment of order"): ...


@dataclass(frozen=True)
class RequestRefund:
    order_id: UUID
    amount_minor: int
    reason: str
    idempotency_key: str | None
    trace: Trace


@dataclass(frozen=True)
class RefundIssued:
    payment: Payment
    refund: Refund
    created: bool


class PaymentsApplication(ProcessApplication):
    name = "payments"
    prefetch = by_order(payment_id_for)

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        gateway: PaymentGateway | None = None,
        retry: RetryPolicy | None = None,
        vault: PersonalDataVault | None = None,
    ) -> None:
        super().__init__(env=env)
        self.vault = vault or in_process_vault(("payment",))
        """Opens the sealed payment token, only to charge it."""
        settings = PaymentsSettings()
        self.gateway = gateway if gateway is not None else gateway_from_settings(settings)
        self.retry = retry if retry is not None else RetryPolicy.from_settings(settings)
        self.on_provider_work: Callable[[], None] | None = None
        """Called after a commit that gave the provider worker something to do."""

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, Trace)

    def close(self) -> None:
        """Close the provider client (its connection pool) and the event store."""
        close = getattr(self.gateway, "close", None)
        if callable(close):
            close()
        super().close()

    # -- policy -----------------------------------------------------------------------------

    def handle(self, message: InboundMessage, processing: ProcessingEvent[UUID]) -> None:
        # Each reaction returns the payment it changed (None: nothing to record).
        payment = self.react(message.envelope.event, processing)
        if payment is not None:
            processing.collect_events(payment)

    @policy(OrderPlaced)
    def _placed(self, event: OrderPlaced, processing: Processing) -> Payment:
        payment = self._payment(processing, event.order_id)
        if not payment.order_known:
            payment.note_order(
                amount_minor=event.total_minor,
                currency=event.currency,
                # sealed for payments (opened only to charge); plaintext in old records
                payment_token=event.sealed_payment_token or event.payment_token,
            )
            self._request_capture(payment)
        return payment

    @policy(StockLocked)
    def _locked(self, event: StockLocked, processing: Processing) -> Payment:
        payment = self._payment(processing, event.order_id)
        if payment.stock_locked:
            return payment
        if payment.ready_to_capture_once_stock_locked:
            # One event instead of StockNoted + CaptureRequested (a fifth of the payment's).
            payment.note_stock_locked_and_request_capture(idempotency_key=str(payment.id))
        else:
            payment.note_stock_locked()
            self._request_capture(payment)
        return payment

    @policy(StockRejected)
    def _rejected(self, event: StockRejected, processing: Processing) -> Payment:
        payment = self._payment(processing, event.order_id)
        if payment.is_captured:
            log.warning("stock rejected after capture: ignored", order_id=str(event.order_id))
        elif not (payment.failure_reason is not None or payment.stopped):
            payment.void()
        return payment

    @policy(OrderCancelled, ShipmentCancelled)
    def _cancelled(
        self,
        event: OrderCancelled | ShipmentCancelled,
        processing: ProcessingEvent[UUID],
    ) -> Payment | None:
        payment = self._payment(processing, event.order_id)
        if payment.is_captured:
            return payment if self.request_cancellation_refund(payment) else None
        if payment.failure_reason is None and not payment.stopped:
            payment.cancel()
            return payment
        return None

    @policy(ReturnReceived)
    def _returned(self, event: ReturnReceived, processing: Processing) -> Payment | None:
        found = self.get_for_update(processing, payment_id_for(event.order_id), Payment)
        if found is None or not self._refund_return(found, event):
            return None
        return found

    def _payment(self, processing: ProcessingEvent[UUID], order_id: UUID) -> Payment:
        """The order's payment as changed so far, as stored, or opened now."""
        payment = self.get_for_update(processing, payment_id_for(order_id), Payment)
        return payment if payment is not None else Payment.open(order_id=order_id)

    def _request_capture(self, payment: Payment) -> None:
        """Once order and stock are both there: record the capture's intent (or fail at once
        without a token). The provider worker calls the provider after the commit."""
        if not payment.ready_to_capture:
            return
        if payment.payment_token is None:
            payment.fail(reason_code="card_declined")
            log.info("payment failed: no payment token", order_id=str(payment.order_id))
            return
        payment.request_capture(idempotency_key=str(payment.id))

    @staticmethod
    def request_cancellation_refund(payment: Payment) -> bool:
        """Request the refund of whatever is left because the order was cancelled; True if
        requested now (once per order, whichever message or worker step asks)."""
        refund_id = cancellation_refund_id(payment.order_id)
        remaining = payment.refundable_minor
        if remaining == 0 or payment.knows_refund(refund_id):
            return False
        payment.request_refund(
            refund_id=refund_id, amount_minor=remaining, reason="order_cancelled"
        )
        log.info("refund requested: order cancelled", order_id=str(payment.order_id))
        return True

    def _refund_return(self, payment: Payment, event: ReturnReceived) -> bool:
        """Request what the return policy granted, never more than is left; True if requested."""
        refund_id = refund_id_for(f"return:{event.return_id}")
        order_id = str(event.order_id)
        if event.refund_minor <= 0 or payment.knows_refund(refund_id):
            return False
        if not payment.is_captured:
            log.warning("return received for a payment never captured", order_id=order_id)
            return False
        amount = min(event.refund_minor, payment.refundable_minor)
        if amount < event.refund_minor:
            log.warning(
                "return refund capped at what is left of the capture",
                order_id=order_id,
                requested_minor=event.refund_minor,
                refunded_minor=amount,
            )
        if amount == 0:
            return False
        payment.request_refund(refund_id=refund_id, amount_minor=amount, reason="return_received")
        log.info("refund requested: return received", order_id=order_id, amount_minor=amount)
        return True

    # -- provider calls (outside any transaction) -------------------------------------------

    def call_refund(self, payment: Payment, refund_id: UUID) -> RefundResult:
        """Ask the provider for a requested refund (idempotency key = the refund id)."""
        pending = payment.pending_refund(refund_id)
        reference, currency = payment.provider_reference, payment.currency
        assert pending is not None
        assert reference is not None
        assert currency is not None
        return self.retry.call(
            "refund",
            lambda: self.gateway.refund(
                idempotency_key=str(refund_id),
                provider_reference=reference,
                amount_minor=pending.amount_minor,
                currency=currency,
            ),
        )

    # -- commands and queries ---------------------------------------------------------------

    def refund(self, command: RequestRefund) -> RefundIssued:
        """Refund part of a captured payment, once per Idempotency-Key.

        The refund is recorded as requested first, then the provider is called, then the
        outcome recorded. A provider still down leaves it requested: the provider worker
        finishes it, and a retry with the same key answers its result.
        Raises PaymentNotFound, IdempotencyConflict, domain NotRefundable (incl.
        RefundExceedsCapture), TransientGatewayError, RefundRejectedError, ConcurrentUpdate.
        """
        refund_id = key_id(
            command.idempotency_key, lambda k: refund_id_for(f"http:{command.order_id}:{k}")
        )
        payment, requested_now = self._record_refund_request(command, refund_id)
        done = payment.refund_by_id(refund_id)
        if done is not None:
            return RefundIssued(payment, done, created=False)
        # A request that found the refund requested by a concurrent twin finishes it too (the
        # provider's idempotency key is the refund id: money moves once) and answers a replay.
        try:
            result = self.call_refund(payment, refund_id)
        except RefundRejectedError as exc:
            refused = str(exc)
            self.record_provider_outcome(
                payment.order_id, lambda p: _reject(p, refund_id, refused), command.trace
            )
            raise
        payment = self.record_provider_outcome(
            payment.order_id, lambda p: _complete(p, refund_id, result), command.trace
        )
        refund = payment.refund_by_id(refund_id)
        assert refund is not None
        return RefundIssued(payment, refund, created=requested_now)

    def _record_refund_request(
        self, command: RequestRefund, refund_id: UUID
    ) -> tuple[Payment, bool]:
        """The payment with the refund requested, and whether this call requested it (False:
        found requested or done before)."""

        def change() -> tuple[Payment, bool]:
            payment = self.get_payment(command.order_id)
            existing = payment.refund_by_id(refund_id) or payment.pending_refund(refund_id)
            if existing is not None:
                if (existing.amount_minor, existing.reason) != (
                    command.amount_minor,
                    command.reason,
                ):
                    raise IdempotencyConflict(
                        "this Idempotency-Key was already used for a "
                        f"refund of {existing.amount_minor} minor units ({existing.reason})"
                    )
                return payment, False
            payment.request_refund(
                refund_id=refund_id,
                amount_minor=command.amount_minor,
                reason=command.reason,
            )
            # IntegrityError: changed meanwhile, check again
            self.save(payment, trace=command.trace)
            return payment, True

        return execute(change, what=f"payment of order {command.order_id}")

    def record_provider_outcome(
        self, order_id: UUID, change: Callable[[Payment], bool], trace: Trace
    ) -> Payment:
        """Apply `change` to the newest payment and save it (its events caused by `trace`),
        retrying on a concurrent change; `change` returns False when there is nothing (more)
        to record."""

        def record() -> Payment:
            payment = self.get_payment(order_id)
            if change(payment):
                self.save(payment, trace=trace)
            return payment

        return execute(record, what=f"payment of order {order_id}")

    def get_payment(self, order_id: UUID) -> Payment:
        payment = self.find(payment_id_for(order_id), Payment)
        if payment is None:
            raise PaymentNotFound(order_id)
        return payment

    # -- metrics and the worker's wake-up, after each commit ----------------------------------

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        super()._notify(recordings)
        work = False
        for recording in recordings:
            kind = type(recording.domain_event)
            outcome = _OUTCOMES.get(kind)
            if outcome is not None:
                PAYMENTS_TOTAL.labels(outcome).inc()
            work = work or kind in PROVIDER_WORK
        if work and self.on_provider_work is not None:
            self.on_provider_work()


def _complete(payment: Payment, refund_id: UUID, result: RefundResult) -> bool:
    if payment.pending_refund(refund_id) is None:
        return False  # the worker recorded it meanwhile
    payment.refund(
        refund_id=refund_id,
        provider_reference=result.provider_reference,
        refunded_at=datetime.now(UTC),
    )
    return True


def _reject(payment: Payment, refund_id: UUID, reason: str) -> bool:
    if payment.pending_refund(refund_id) is None:
        return False
    payment.reject_refund(refund_id=refund_id, reason=reason)
    return True


PROVIDER_WORK: frozenset[type[Any]] = frozenset(
    {Payment.CaptureRequested, Payment.Cancelled, Payment.Voided, Payment.RefundRequested}
)
"""Recorded events after which the provider worker has a call to make."""

_OUTCOMES: dict[type[Any], str] = {
    Payment.Captured: "captured",
    Payment.Failed: "failed",
    Payment.OutcomeUnknown: "unknown",
    Payment.Refunded: "refunded",
}
