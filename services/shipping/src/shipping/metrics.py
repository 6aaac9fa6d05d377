"""Business metrics of shipping (counted by the application when a shipment changes)."""

from __future__ import annotations

from shipping.application import SHIPMENTS

OUTCOMES = ("shipped", "delivered", "exception")


def initialise_metrics() -> None:
    """Every outcome's series exists from the start (at 0), so its first increase shows."""
    for outcome in OUTCOMES:
        SHIPMENTS.labels(outcome)
