"""The payments application: the capture/refund policy over the Payment aggregate, and commands.

Policy (runs in the inbox's worker thread, one transaction per batch with its tracking):
- OrderPlaced and StockLocked, in either order: when both have arrived, charge the order
  total through the gateway (idempotency key = payment id) -> captured or failed.
- OrderCancelled: captured -> refund what is left (key = uuid5 of the message's ce_id);
  not captured yet -> cancelled, never captured afterwards.
- StockRejected: voided, never captured.
- ReturnReceived with a refund: refund it (reason "return_received", refund id = uuid5 of the
  return id), capped at what is left of the capture (the cap is logged).
Anything else is ignored. Every step first checks the aggregate's state, so a message
redelivered at another offset has no second effect; the gateway's idempotency keys cover a
transaction that failed after the gateway call and is applied again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Recording

from fulfilment_kit.contracts import (
    OrderCancelled,
    OrderPlaced,
    ReturnReceived,
    StockLocked,
    StockRejected,
)
from fulfilment_kit.messaging.inbox import InboundMessage, InboxApplication
from fulfilment_kit.persistence.transcodings import register_dataclasses
from fulfilment_kit.tracing import Trace
from payments.domain import Payment, Refund, payment_id_for, refund_id_for
from payments.gateway import (
    GatewaySettings,
    PaymentGateway,
    RetryPolicy,
    TransientGatewayError,
    gateway_from_settings,
)
from payments.metrics import PAYMENTS_TOTAL

log = structlog.get_logger(__name__)


class PaymentNotFound(LookupError):
    pass


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


class ConcurrentUpdate(Exception):
    """The payment kept changing under the command; the client may retry."""


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


class PaymentsApplication(InboxApplication):
    name = "payments"
    reacts_to = (
        OrderPlaced,
        StockLocked,
        StockRejected,
        OrderCancelled,
        ReturnReceived,
    )
    conflict_attempts = 5

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        gateway: PaymentGateway | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(env=env)
        settings = GatewaySettings()
        self.gateway = gateway if gateway is not None else gateway_from_settings(settings)
        self.retry = retry if retry is not None else RetryPolicy.from_settings(settings)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, Trace)

    # -- policy -----------------------------------------------------------------------------

    def aggregate_ids(self, message: InboundMessage) -> list[UUID]:
        order_id = getattr(message.envelope.event, "order_id", None)
        return [payment_id_for(order_id)] if isinstance(order_id, UUID) else []

    def handle(self, message: InboundMessage, processing: ProcessingEvent[UUID]) -> None:
        event: Any = message.envelope.event
        trace = Trace.caused_by(message.envelope.id, message.envelope.correlation_id)
        if isinstance(event, OrderPlaced):
            payment = self._payment(processing, event.order_id, trace)
            if not payment.order_known:
                payment.note_order(
                    amount_minor=event.total_minor,
                    currency=event.currency,
                    payment_token=event.payment_token,
                    trace=trace,
                )
                self._settle(payment, trace)
        elif isinstance(event, StockLocked):
            payment = self._payment(processing, event.order_id, trace)
            if not payment.stock_locked:
                payment.note_stock_locked(trace=trace)
                self._settle(payment, trace)
        elif isinstance(event, StockRejected):
            payment = self._payment(processing, event.order_id, trace)
            if not payment.is_settled:
                payment.void(trace=trace)
            elif payment.is_captured:
                log.warning("stock rejected after capture: ignored", order_id=str(event.order_id))
        elif isinstance(event, OrderCancelled):
            payment = self._payment(processing, event.order_id, trace)
            if payment.is_captured:
                self._refund_rest(payment, message.envelope.id, trace)
            elif not payment.is_settled:
                payment.cancel(trace=trace)
        elif isinstance(event, ReturnReceived):
            found = self.get_for_update(processing, payment_id_for(event.order_id), Payment)
            if found is None or not self._refund_return(found, event, trace):
                return
            payment = found
        else:
            return  # not ours
        processing.collect_events(payment)

    def _payment(self, processing: ProcessingEvent[UUID], order_id: UUID, trace: Trace) -> Payment:
        """The order's payment as changed so far, as stored, or opened now."""
        payment = self.get_for_update(processing, payment_id_for(order_id), Payment)
        return payment if payment is not None else Payment.open(order_id=order_id, trace=trace)

    def _settle(self, payment: Payment, trace: Trace) -> None:
        """Capture once order and stock are both there (and nothing settled it before)."""
        if not payment.ready_to_capture:
            return
        token = payment.payment_token
        if token is None:
            payment.fail(reason_code="card_declined", trace=trace)
            log.info("payment failed: no payment token", order_id=str(payment.order_id))
            return
        amount, currency = payment.amount_minor, payment.currency
        assert amount is not None
        assert currency is not None
        try:
            result = self.retry.call(
                "charge",
                lambda: self.gateway.charge(
                    idempotency_key=str(payment.id),
                    amount_minor=amount,
                    currency=currency,
                    token=token,
                ),
            )
        except TransientGatewayError:
            payment.fail(reason_code="provider_unavailable", trace=trace)
            log.warning("payment failed: provider unavailable", order_id=str(payment.order_id))
            return
        if result.captured:
            assert result.provider_reference is not None
            payment.capture(provider_reference=result.provider_reference, trace=trace)
            log.info("payment captured", order_id=str(payment.order_id), amount_minor=amount)
        else:
            assert result.failure_code is not None
            payment.fail(reason_code=result.failure_code, trace=trace)
            log.info("payment declined", order_id=str(payment.order_id), reason=result.failure_code)

    def _refund_rest(self, payment: Payment, cause: str, trace: Trace) -> None:
        """Refund whatever is still refundable because the order was cancelled."""
        remaining = payment.refundable_minor
        refund_id = refund_id_for(f"message:{cause}")
        if remaining == 0 or payment.refund_by_id(refund_id) is not None:
            return
        # A provider still down after the retries raises: the inbox retries the message and
        # finally dead-letters it (replayable); a refund is never dropped.
        self._refund_through_gateway(payment, refund_id, remaining, "order_cancelled", trace)
        log.info("payment refunded: order cancelled", order_id=str(payment.order_id))

    def _refund_return(self, payment: Payment, event: ReturnReceived, trace: Trace) -> bool:
        """Refund what the return policy granted, never more than is left; True if refunded."""
        refund_id = refund_id_for(f"return:{event.return_id}")
        order_id = str(event.order_id)
        if event.refund_minor <= 0 or payment.refund_by_id(refund_id) is not None:
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
        self._refund_through_gateway(payment, refund_id, amount, "return_received", trace)
        log.info("payment refunded: return received", order_id=order_id, amount_minor=amount)
        return True

    def _refund_through_gateway(
        self, payment: Payment, refund_id: UUID, amount_minor: int, reason: str, trace: Trace
    ) -> None:
        payment.check_refund(refund_id, amount_minor)
        reference, currency = payment.provider_reference, payment.currency
        assert reference is not None
        assert currency is not None
        result = self.retry.call(
            "refund",
            lambda: self.gateway.refund(
                idempotency_key=str(refund_id),
                provider_reference=reference,
                amount_minor=amount_minor,
                currency=currency,
            ),
        )
        payment.refund(
            refund_id=refund_id,
            amount_minor=amount_minor,
            reason=reason,
            provider_reference=result.provider_reference,
            refunded_at=datetime.now(UTC),
            trace=trace,
        )

    # -- commands and queries ---------------------------------------------------------------

    def refund(self, command: RequestRefund) -> RefundIssued:
        """Refund part of a captured payment, once per Idempotency-Key.

        Raises PaymentNotFound, IdempotencyConflict, domain NotRefundable (incl.
        RefundExceedsCapture), TransientGatewayError, RefundRejectedError, ConcurrentUpdate.
        """
        if command.idempotency_key is None:
            refund_id = uuid.uuid4()
        else:
            refund_id = refund_id_for(f"http:{command.order_id}:{command.idempotency_key}")
        for _ in range(self.conflict_attempts):
            payment = self.get_payment(command.order_id)
            existing = payment.refund_by_id(refund_id)
            if existing is not None:
                if (existing.amount_minor, existing.reason) != (
                    command.amount_minor,
                    command.reason,
                ):
                    raise IdempotencyConflict(
                        "this Idempotency-Key was already used for a "
                        f"refund of {existing.amount_minor} minor units ({existing.reason})"
                    )
                return RefundIssued(payment, existing, created=False)
            self._refund_through_gateway(
                payment, refund_id, command.amount_minor, command.reason, command.trace
            )
            try:
                self.save(payment)
            except IntegrityError:
                continue  # changed meanwhile: check again (the gateway call is idempotent)
            refund = payment.refund_by_id(refund_id)
            assert refund is not None
            return RefundIssued(payment, refund, created=True)
        raise ConcurrentUpdate(f"payment of order {command.order_id} kept changing; retry")

    def get_payment(self, order_id: UUID) -> Payment:
        payment = self.find(payment_id_for(order_id), Payment)
        if payment is None:
            raise PaymentNotFound(str(order_id))
        return payment

    # -- metrics, after each commit ---------------------------------------------------------

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        super()._notify(recordings)
        for recording in recordings:
            outcome = _OUTCOMES.get(type(recording.domain_event))
            if outcome is not None:
                PAYMENTS_TOTAL.labels(outcome).inc()


_OUTCOMES: dict[type[Any], str] = {
    Payment.Captured: "captured",
    Payment.Failed: "failed",
    Payment.Refunded: "refunded",
}
