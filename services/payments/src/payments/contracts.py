"""Maps the Payment's private domain events to public integration events; the others (opened,
noted, requested, cancelled, ...) stay private."""

from __future__ import annotations

from fulfilment_kit.contracts import (
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentUnresolved,
)
from fulfilment_kit.messaging.public import AGGREGATE_ID, RECORDED_AT, PublicEvents
from payments.domain import Payment

to_public = PublicEvents()
MONEY = "order_id amount_minor currency"
to_public.copy(
    Payment.Captured, PaymentCaptured, MONEY, payment_id=AGGREGATE_ID, captured_at=RECORDED_AT
)
to_public.copy(
    Payment.Failed,
    PaymentFailed,
    f"{MONEY} reason_code",
    payment_id=AGGREGATE_ID,
    failed_at=RECORDED_AT,
)
to_public.copy(
    Payment.Refunded,
    PaymentRefunded,
    "order_id refund_id total_refunded_minor currency full_refund reason refunded_at",
    payment_id=AGGREGATE_ID,
    refund_minor="amount_minor",
)
to_public.copy(
    Payment.Unresolved,
    PaymentUnresolved,
    f"{MONEY} unknown_since lookups flagged_at",
    payment_id=AGGREGATE_ID,
)
