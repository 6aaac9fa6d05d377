"""Lookup of event classes by CloudEvents type."""

from __future__ import annotations

from fulfilment_kit.contracts import (  # noqa: F401  (imported to register the subclasses)
    customer_service,
    inventory,
    orders,
    payments,
    shipping,
)
from fulfilment_kit.contracts.base import IntegrationEvent

__all__ = ["EVENT_TYPES", "event_class_for"]


def _all_subclasses(cls: type[IntegrationEvent]) -> list[type[IntegrationEvent]]:
    found: list[type[IntegrationEvent]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def _build() -> dict[str, type[IntegrationEvent]]:
    types: dict[str, type[IntegrationEvent]] = {}
    for cls in _all_subclasses(IntegrationEvent):
        other = types.setdefault(cls.ce_type, cls)
        if other is not cls:
            raise RuntimeError(
                f"ce_type {cls.ce_type!r} used by {other.__name__} and {cls.__name__}"
            )
    return dict(sorted(types.items()))


EVENT_TYPES: dict[str, type[IntegrationEvent]] = _build()
"""Every public event class by its `ce_type`, sorted by `ce_type`."""


def event_class_for(ce_type: str) -> type[IntegrationEvent] | None:
    """The event class for a CloudEvents type, or None when it is unknown."""
    return EVENT_TYPES.get(ce_type)
