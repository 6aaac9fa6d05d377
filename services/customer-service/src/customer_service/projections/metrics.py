"""Metrics of the read models (no ids in labels)."""

from __future__ import annotations

from prometheus_client import Counter

from fulfilment_kit.observability.metrics import REGISTRY

DUPLICATE_EVENTS = Counter(
    "fulfil_readmodel_duplicate_events_total",
    "Events the read models received again under a ce_id they had applied (no effect)",
    registry=REGISTRY,
)
