"""Business metrics of the payments service (no order or payment ids in labels)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter

from fulfilment_kit.contracts.payments import (
    PaymentCaptured,
    PaymentFailed,
    PaymentFailureCode,
    PaymentRefunded,
)
from fulfilment_kit.observability.business import EventMeter, expected_currencies
from fulfilment_kit.observability.metrics import REGISTRY

PAYMENTS_TOTAL = Counter(
    "fulfil_payments_total",
    "Payment outcomes recorded: captured, failed (definite declines), unknown (an unclear "
    "provider answer, reconciled by lookup), refunded (one per refund)",
    ["outcome"],
    registry=REGISTRY,
)

PAYMENT_OUTCOMES = Counter(
    "fulfil_payment_outcomes_total",
    "Published payment outcomes by result code: captured (code approved) or failed (its reason)",
    ["outcome", "code"],
    registry=REGISTRY,
)
REFUNDED_MINOR = Counter(
    "fulfil_refunds_minor_total",
    "Amounts refunded, in minor units of the currency, by refund reason",
    ["currency", "reason"],
    registry=REGISTRY,
)


def payment_meter() -> EventMeter:
    """Payment outcomes and refunds from the published payment events (each series from 0)."""
    for outcome in ("captured", "failed", "refunded"):
        PAYMENTS_TOTAL.labels(outcome)
    PAYMENT_OUTCOMES.labels("captured", "approved")
    for code in get_args(PaymentFailureCode):
        PAYMENT_OUTCOMES.labels("failed", code)
    for currency in expected_currencies():
        for reason in get_args(PaymentRefunded.model_fields["reason"].annotation):
            REFUNDED_MINOR.labels(currency, reason)
    meter = EventMeter()

    def refunded(event: PaymentRefunded) -> None:
        REFUNDED_MINOR.labels(event.currency, event.reason).inc(event.refund_minor)

    meter.on(PaymentCaptured, lambda _: PAYMENT_OUTCOMES.labels("captured", "approved").inc())
    meter.on(PaymentFailed, lambda e: PAYMENT_OUTCOMES.labels("failed", e.reason_code).inc())
    meter.on(PaymentRefunded, refunded)
    return meter
