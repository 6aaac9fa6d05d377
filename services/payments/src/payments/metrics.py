"""Business metrics of the payments service (no order or payment ids in labels)."""

from __future__ import annotations

from prometheus_client import Counter

from fulfilment_kit.observability.metrics import REGISTRY

PAYMENTS_TOTAL = Counter(
    "fulfil_payments_total",
    "Payment outcomes recorded: captured, failed (definite declines), unknown (an unclear "
    "provider answer, reconciled by lookup), refunded (one per refund)",
    ["outcome"],
    registry=REGISTRY,
)
